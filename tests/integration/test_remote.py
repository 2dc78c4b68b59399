"""Results a teammate pulls instead of retraining: `dvc push` to a remote (a local directory here;
S3, GCS or SSH the same way), a fresh clone, `dvc pull`, and a `dvc repro` with nothing to do."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.project import make_project, run


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, prefect_server):
    """A project that ran, committed its results and pushed its data to a local remote."""
    root = tmp_path_factory.mktemp("remote")
    (root / "project").mkdir()
    project = make_project(root / "project")
    run(project, "dvc", "remote", "add", "-d", "storage", str(root / "storage"))
    run(project, "dvc", "repro")
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "baseline")
    run(project, "dvc", "push")
    return root, project


def test_a_clone_pulls_the_results_and_has_nothing_to_rerun(pushed):
    root, project = pushed
    run(root, "git", "clone", "-q", str(project), "clone")
    clone = root / "clone"
    run(clone, "dvc", "pull")
    assert (clone / "models/cnn/fold_1/weights.pt").exists()
    assert "<img" in (clone / "reports/report.html").read_text()  # the full report, pulled
    # dvc.yaml's pipeline (tune/dvc.yaml's stage never ran in this project)
    assert "Data and pipelines are up to date" in run(clone, "dvc", "status", "dvc.yaml")
    assert "Running stage" not in run(clone, "dvc", "repro")

    # One parameter changes: only what depends on it runs again.
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["evaluate"]["tta_flip"] = not params["evaluate"]["tta_flip"]
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(clone, "dvc", "repro")
    ran = {stage for stage in ("download", "prepare", "split", "train", "evaluate", "report")
           if f"Running stage '{stage}'" in out}
    assert ran == {"evaluate", "report"}
    # ... and DVC compares the new results with the committed ones.
    diff = json.loads(run(clone, "dvc", "metrics", "diff", "--json"))
    assert diff["metrics/evaluate.json"]  # TTA changes every loss and calibration figure at least
    assert "eval/plots/confusion" in run(clone, "dvc", "plots", "diff", "HEAD", "--json")
