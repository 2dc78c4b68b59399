"""The stages through `dvc repro`, in a throw-away copy of the project, on a slice of the shared
CIFAR-10 archive (or, where that archive is absent, a synthetic one)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tasks.archive import detect_layout
from tests.integration.project import make_project, project_env, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"))


def test_repro_runs_every_stage_then_nothing(prefect_server, project):
    out = run(project, "dvc", "repro")
    for stage in ("download", "prepare", "split", "train", "evaluate", "report"):
        assert f"Running stage '{stage}'" in out
    # The archive is a slice of the shared mirror, or synthetic where there is none: count its files.
    archive = yaml.safe_load((project / "params.yaml").read_text())["data"]["source"]
    files = detect_layout(archive).files
    summary = json.loads((project / "data/prepared/summary.json").read_text())
    assert summary["train"]["images"] == sum(files["train"].values()) > 0
    assert summary["test"]["images"] == sum(files["test"].values()) > 0
    assert summary["train"]["per_class"] == files["train"]
    metrics = json.loads((project / "metrics/train.json").read_text())
    assert set(metrics) == {"ann", "cnn"} and set(metrics["cnn"]["folds"]) == {"fold_0", "fold_1"}
    assert (project / "models/cnn/fold_1/weights.pt").exists()
    assert (project / "logs/train/ann/fold_0/plots/metrics/val/acc.tsv").exists()
    plots = run(project, "dvc", "plots", "show", "--json")
    assert "val/acc" in plots and "TypeError" not in plots
    evaluation = json.loads((project / "metrics/evaluate.json").read_text())
    assert 0 <= evaluation["cnn"]["ensemble_acc"] <= 1 and "cnn_vs_ann" in evaluation["comparison"]
    assert "<img" in (project / "reports/report.html").read_text()

    again = run(project, "dvc", "repro")
    assert "Running stage" not in again
    # dvc.yaml's pipeline: tune/dvc.yaml's stage is not part of it and has not run here.
    assert "Data and pipelines are up to date" in run(project, "dvc", "status", "dvc.yaml")


def test_tune_runs_only_when_asked_and_then_is_up_to_date(prefect_server, project):
    run(project, "dvc", "repro")
    assert "tune" not in run(project, "dvc", "repro", "--dry")
    out = run(project, "dvc", "repro", "tune/dvc.yaml")
    assert "Running stage 'tune/dvc.yaml:tune'" in out and "Running stage 'train'" not in out
    assert yaml.safe_load((project / "tune/best.yaml").read_text())["set"]
    assert "Running stage" not in run(project, "dvc", "repro", "tune/dvc.yaml")
    assert "Data and pipelines are up to date" in run(project, "dvc", "status")

    # Collected into tune/summary.json, the study reaches the report: only the report runs again.
    run(project, "python", "-m", "flows.tune", "table")
    summary = json.loads((project / "tune/summary.json").read_text())["summary"]
    assert summary["trials"] == 2 and summary["baseline_val_acc"] is not None
    out = run(project, "dvc", "repro")
    assert "Running stage 'report'" in out and "Running stage 'evaluate'" not in out
    section = (project / "reports/report.md").read_text().split("## Tuning")[1]
    assert f"{summary['trials']} trials: {summary['completed']} completed, {summary['pruned']} pruned" in section


def test_a_split_parameter_reruns_split_onwards_only(prefect_server, project):
    run(project, "dvc", "repro")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["split"]["subsample"] = 0.5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(project, "dvc", "repro")
    assert "Running stage 'download'" not in out and "Running stage 'prepare'" not in out
    assert "Running stage 'split'" in out and "Running stage 'train'" in out


@pytest.mark.parametrize(("stage", "section", "key", "value"), [
    ("download", "split", "folds", 1),  # any invalid value stops every stage, even one that never reads it
    ("train", "train", "models", ["cnn", "gpt"]),  # the registry is checked when training starts
])
def test_bad_params_stop_before_any_work(project, stage, section, key, value):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        done = subprocess.run([sys.executable, "-m", f"flows.{stage}"], cwd=project, capture_output=True,
                              text=True)
    finally:
        run(project, "git", "checkout", "params.yaml")
    assert done.returncode != 0
    assert "error: params.yaml: invalid parameters:" in done.stderr
    assert f"{section}.{key} = {value!r}" in done.stderr and "Traceback" not in done.stderr


def test_a_locked_repository_is_one_line_from_dvc(project):
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom dvc.repo import Repo\n"
                               "r = Repo('.'); r.lock.lock(); print('locked', flush=True); time.sleep(30)"],
                              cwd=project, env=project_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        done = subprocess.run(["dvc", "repro"], cwd=project, env=project_env(), capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode != 0 and "Unable to acquire lock" in done.stderr and "Traceback" not in done.stderr
