"""`dvc metrics diff` between two commits reads well on the evaluate stage's metrics file, and the
report's change table says what DVC says."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tasks import report
from tasks.paths import Paths
from tests.integration.project import project_env

METRICS = {
    "ann": {"test_acc_mean": 0.52, "test_acc_std": 0.004, "ensemble_acc": 0.55, "ece": 0.03,
            "folds": {"fold_0": {"test_acc": 0.52}, "fold_1": {"test_acc": 0.52}}},
    "cnn": {"test_acc_mean": 0.70, "test_acc_std": 0.006, "ensemble_acc": 0.73, "ece": 0.05,
            "folds": {"fold_0": {"test_acc": 0.70}, "fold_1": {"test_acc": 0.70}}},
    "comparison": {"cnn_vs_ann": {"mean_diff": 0.18, "t_statistic": None, "t_pvalue": None,
                                  "mcnemar_pvalue": 1.2e-50, "cnn_only_right": 2100,
                                  "ann_only_right": 300}},
}


def run(root: Path, *command: str) -> str:
    """stdout only (DVC's warnings go to stderr, and `--json` output must parse)."""
    done = subprocess.run(command, cwd=root, env=project_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def dvc(root: Path, *args: str) -> str:
    return run(root, sys.executable, "-m", "dvc", *args)


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git + DVC repository whose dvc.yaml declares only the metrics file, committed twice."""
    (tmp_path / "dvc.yaml").write_text("metrics:\n  - metrics/evaluate.json\n")
    (tmp_path / "metrics").mkdir()
    metrics = tmp_path / "metrics" / "evaluate.json"
    metrics.write_text(json.dumps(METRICS, indent=2))
    run(tmp_path, "git", "init", "-q")
    dvc(tmp_path, "init", "-q")
    dvc(tmp_path, "config", "core.analytics", "false")
    run(tmp_path, "git", "add", "-A")
    run(tmp_path, "git", "commit", "-qm", "first")
    better = copy.deepcopy(METRICS)
    better["cnn"].update(test_acc_mean=0.75, ensemble_acc=0.78)
    metrics.write_text(json.dumps(better, indent=2))
    run(tmp_path, "git", "commit", "-qam", "second")
    return tmp_path


def test_metrics_diff_between_two_commits_shows_the_changed_accuracy(repo):
    table = dvc(repo, "metrics", "diff", "HEAD~1", "HEAD")
    line = next(row for row in table.splitlines() if "cnn.test_acc_mean" in row)
    assert "0.7" in line and "0.75" in line and "0.05" in line
    assert "ann.test_acc_mean" not in table  # unchanged metrics are left out
    diff = json.loads(dvc(repo, "metrics", "diff", "HEAD~1", "HEAD", "--json"))
    changes = diff["metrics/evaluate.json"]
    assert set(changes) == {"cnn.test_acc_mean", "cnn.ensemble_acc"}
    assert changes["cnn.test_acc_mean"]["old"] == 0.70 and changes["cnn.test_acc_mean"]["new"] == 0.75
    assert changes["cnn.test_acc_mean"]["diff"] == pytest.approx(0.05)


def test_the_reports_change_table_agrees_with_dvc(repo):
    metrics = repo / "metrics" / "evaluate.json"
    workspace = json.loads(metrics.read_text())
    workspace["ann"]["ece"] = 0.02
    workspace["comparison"]["cnn_vs_ann"]["cnn_only_right"] = 2000
    metrics.write_text(json.dumps(workspace, indent=2))
    dvc_changes = json.loads(dvc(repo, "metrics", "diff", "--json"))["metrics/evaluate.json"]
    ours = report.metrics_diff(Paths(repo))
    assert {r.metric: (r.HEAD, r.workspace, r.change) for r in ours.itertuples()} == {
        k: pytest.approx((v["old"], v["new"], v["diff"])) for k, v in dvc_changes.items()}
    assert set(ours["metric"]) == {"ann.ece", "comparison.cnn_vs_ann.cnn_only_right"}
