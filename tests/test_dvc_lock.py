"""The committed results against the committed parameters: `dvc.lock` records the params every
stage ran with, and `metrics/`, `eval/` and `reports/report.md` in git come from those runs. When
they differ from `params.yaml`, git shows results of other settings as if they were the current
ones (as it once showed the quick variant's), so the difference fails the suite, naming each key."""

from __future__ import annotations

import pytest
from dvc.utils.serialize import load_yaml

from tasks.provenance import drift, lock_drift, recorded_params
from tests.conftest import ROOT

# Read as DVC reads them (YAML 1.2: DVC writes 1e-06, which YAML 1.1 readers take for a string).
PARAMS = load_yaml(ROOT / "params.yaml")
LOCK = load_yaml(ROOT / "dvc.lock")
STAGES = load_yaml(ROOT / "dvc.yaml")["stages"]


def test_every_stage_of_dvc_yaml_has_run_and_is_locked():
    locked = set(LOCK["stages"])
    assert locked == set(STAGES), (f"dvc.lock: stages {sorted(set(STAGES) - locked)} never ran, "
                                   f"{sorted(locked - set(STAGES))} are not in dvc.yaml")


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_locked_params_are_the_committed_params(stage):
    recorded = recorded_params(LOCK, stage)
    assert recorded or not STAGES[stage].get("params"), f"dvc.lock: stage {stage!r} records no params"
    differences = drift(recorded, PARAMS)
    assert not differences, (f"dvc.lock: stage {stage!r} ran with other params than params.yaml "
                             "(re-run `make repro` and commit what it produces):\n  " + "\n  ".join(differences))


def test_drift_names_each_changed_key():
    params = {"train": {"epochs": 16, "lr": 0.1, "models": ["ann", "cnn"]}, "split": {"folds": 5}}
    assert drift({"train": {"epochs": 16, "lr": 0.1, "models": ["ann", "cnn"]}, "split.folds": 5}, params) == []
    assert drift({"train": {"epochs": 4, "lr": 0.1, "models": ["ann"]}, "split.folds": 2}, params) == [
        "split.folds: dvc.lock has 2, params.yaml has 5",
        "train.epochs: dvc.lock has 4, params.yaml has 16",
        "train.models: dvc.lock has ['ann'], params.yaml has ['ann', 'cnn']"]
    assert drift({"train": {"lr": 0.1, "old": 1}}, params) == [
        "train.epochs: dvc.lock has no such key, params.yaml has 16",
        "train.models: dvc.lock has no such key, params.yaml has ['ann', 'cnn']",
        "train.old: dvc.lock has 1, params.yaml has no such key"]
    assert drift({"gone.key": 1}, params) == ["gone.key: dvc.lock has 1, params.yaml has no such key"]
    lock = {"stages": {"split": {"params": {"params.yaml": {"split.folds": 2}}}, "download": {"cmd": "x"}}}
    assert lock_drift(lock, params) == ["split: split.folds: dvc.lock has 2, params.yaml has 5"]
