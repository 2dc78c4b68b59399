"""The stages through `dvc repro`, in a throw-away copy of the project, on a slice of the shared
CIFAR-10 archive (or, where that archive is absent, a synthetic one)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, SHARED_ARCHIVE, image_folder_files, write_tar


def slice_of_shared_archive(target: Path, per_class: int) -> Path:
    """The first `per_class` images of every class and split, in the shared archive's layout."""
    taken: dict[tuple[str, str], int] = {}
    with tarfile.open(SHARED_ARCHIVE) as src, tarfile.open(target, "w:gz") as dst:
        for info in src:
            parts = Path(info.name).parts
            if not info.isfile() or len(parts) < 3:
                continue
            key = (parts[-3], parts[-2])
            if taken.get(key, 0) < per_class:
                taken[key] = taken.get(key, 0) + 1
                dst.addfile(info, io.BytesIO(src.extractfile(info).read()))
    return target


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC repository holding the pipeline's code and a small-data params.yaml."""
    root = tmp_path_factory.mktemp("project")
    for name in ("flows", "tasks"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", root)
    if SHARED_ARCHIVE.exists():
        archive = slice_of_shared_archive(root.parent / "slice.tar.gz", per_class=12)
    else:
        archive = write_tar(root.parent / "slice.tar.gz", image_folder_files(per_class=(12, 12)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(archive),
                          checksum="sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest())
    params["split"].update(folds=2)
    params["train"].update(models=["ann", "cnn"], epochs=1, batch_size=32, parallel=1)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(root, *command)
    return root


def run(root: Path, *command: str) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_repro_runs_every_stage_then_nothing(prefect_server, project):
    out = run(project, "dvc", "repro")
    for stage in ("download", "prepare", "split", "train"):
        assert f"Running stage '{stage}'" in out
    summary = json.loads((project / "data/prepared/summary.json").read_text())
    assert summary["train"]["images"] == 120 and summary["test"]["images"] == 120
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert set(metrics) == {"ann", "cnn"} and set(metrics["cnn"]["folds"]) == {"fold_0", "fold_1"}
    assert (project / "models/cnn/fold_1/weights.pt").exists()
    assert (project / "logs/train/ann/fold_0/plots/metrics/val/acc.tsv").exists()
    assert "val/acc" in run(project, "dvc", "plots", "show", "--json")

    again = run(project, "dvc", "repro")
    assert "Running stage" not in again
    assert "Data and pipelines are up to date" in run(project, "dvc", "status")


def test_a_split_parameter_reruns_split_onwards_only(prefect_server, project):
    run(project, "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"]["subsample"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(project, "dvc", "repro")
    assert "Running stage 'download'" not in out and "Running stage 'prepare'" not in out
    assert "Running stage 'split'" in out and "Running stage 'train'" in out


def test_bad_params_stop_before_any_work(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["models"] = ["cnn", "gpt"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done = subprocess.run([sys.executable, "-m", "flows.download"], cwd=project, capture_output=True,
                              text=True)
    finally:
        run(project, "git", "checkout", "params.yaml")
    assert done.returncode != 0
    assert "params.yaml: invalid parameters" in done.stderr and "'gpt'" in done.stderr
