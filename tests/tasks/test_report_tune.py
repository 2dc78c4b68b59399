"""The report's "Tuning" section, from a tune/summary.json as `python -m flows.tune table` writes it."""

import copy
import json
import re

import pytest

from tasks import report, tune_results
from tests.evaluation_data import REPORT, evaluated_report_inputs

RECORD = {
    "study": "cifar10-cnn-0123456789", "collected": "2026-12-02T19:00:00+00:00", "model": "cnn", "fold": 0,
    "epochs": 6, "subsample": 0.1, "pruner": "median",
    "baseline": {"train.lr": 0.1, "train.activation": "relu"},
    "trials": [
        {"number": 0, "state": "COMPLETE", "params": {"train.lr": 0.1, "train.activation": "relu"},
         "value": 0.4573, "epochs": 6, "baseline": True, "seconds": 80.0},
        {"number": 1, "state": "PRUNED", "params": {"train.lr": 0.9, "train.activation": "gelu"},
         "value": 0.1012, "epochs": 1, "baseline": False, "seconds": 14.0},
        {"number": 2, "state": "COMPLETE", "params": {"train.lr": 0.0214, "train.activation": "silu"},
         "value": 0.5344, "epochs": 6, "baseline": False, "seconds": 81.0},
    ],
    "summary": {"study": "cifar10-cnn-0123456789", "trials": 3, "completed": 2, "pruned": 1, "best_trial": 2,
                "best_val_acc": 0.5344, "baseline_val_acc": 0.4573, "gain": 0.0771,
                "best_params": {"train.lr": 0.0214, "train.activation": "silu"}},
    "importances": {"train.lr": 0.7, "train.activation": 0.3},
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return evaluated_report_inputs(tmp_path_factory.mktemp("reported"))


def _with(inputs, tmp_path, text: str):
    path = tmp_path / "tune" / "summary.json"
    path.parent.mkdir()
    path.write_text(text)
    changed = copy.copy(inputs)
    changed.tune = path
    return changed


def test_the_section_gives_the_best_trial_against_the_recipe_and_both_charts(inputs, tmp_path):
    built = report.build_report(_with(inputs, tmp_path, json.dumps(RECORD)), REPORT, seed=42)
    section = built.markdown.split("## Tuning: what an Optuna study found")[1].split("\n## ")[0]
    assert "3 trials: 2 completed, 1 pruned" in section
    assert "Best: trial 2, validation accuracy 53.44 %, +7.71 points against 45.73 %" in section
    assert re.search(r"\| train.activation +\| relu +\| silu +\|", section)  # params.yaml's value, the best
    assert "never the test set" in section
    html = built.html.split('<section id="tuning">')[1].split("</section>")[0]
    assert "Tuning: optimisation history" in html and "Tuning: parameter importances" in html
    assert html.count("data:image/png;base64,") == 2


def test_without_a_study_the_section_says_how_to_run_one(inputs, tmp_path):
    missing = copy.copy(inputs)
    missing.tune = tmp_path / "none" / "summary.json"
    assert "No tuning study collected yet" in report.build_report(missing, REPORT, seed=42).markdown
    empty = {**RECORD, "trials": [], "summary": None, "importances": {}}
    built = report.build_report(_with(inputs, tmp_path, json.dumps(empty)), REPORT, seed=42)
    assert "study cifar10-cnn-0123456789 has no completed trial" in built.markdown
    assert "`dvc repro tune/dvc.yaml`" in built.markdown


def test_a_broken_results_file_is_one_line_naming_it(inputs, tmp_path):
    changed = _with(inputs, tmp_path, '{"study": "x", "trials": []}')
    expected = r"summary.json: not a tune results file \(KeyError: 'baseline, collected, "
    with pytest.raises(tune_results.TuneResultsError, match=expected):
        report.build_report(changed, REPORT, seed=42)
