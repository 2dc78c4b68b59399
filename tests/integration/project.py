"""A throw-away copy of the project (git + DVC) on a slice of the shared CIFAR-10 archive, or on
synthetic images where that archive is absent."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

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


def make_project(root: Path) -> Path:
    """A git + DVC repository holding the pipeline's code and a small-data params.yaml."""
    for name in ("flows", "tasks", "presets", "progression"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "tune").mkdir()
    for name in ("tune/dvc.yaml", "tune/.gitignore", "tune/summary.json"):  # the tune pipeline, no study
        shutil.copy(ROOT / name, root / name)
    for name in ("dvc.yaml", ".gitignore", "prefect.toml"):
        shutil.copy(ROOT / name, root)
    if SHARED_ARCHIVE.exists():
        archive = slice_of_shared_archive(root.parent / "slice.tar.gz", per_class=12)
    else:
        archive = write_tar(root.parent / "slice.tar.gz", image_folder_files(per_class=(12, 12)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(source=str(archive),
                          checksum="sha256:" + hashlib.sha256(archive.read_bytes()).hexdigest())
    params["split"].update(folds=2)
    params["train"].update(models=["ann", "cnn"], epochs=1, batch_size=32, parallel=1)
    params["tune"].update(model="ann", trials=2, epochs=1, subsample=1.0, parallel=1, task_runner="threads",
                          space={"train.lr": {"low": 0.01, "high": 0.2, "log": True}})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"],
                    ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(root, *command)
    return root


def project_env() -> dict[str, str]:
    """The environment of a command in the project: this interpreter first on PATH, a git identity."""
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")


def run(root: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=root, env=project_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr
