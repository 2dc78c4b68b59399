"""The report's "Progression" section, from a progression/results.json written by the collector."""

import copy
import json
import re

import pandas as pd
import pytest

from tasks import progression, report
from tests.evaluation_data import REPORT, evaluated_report_inputs

STEPS = [progression.Step("ann-plain", "ANN, no augmentation", {"train.models": ["ann"]}),
         progression.Step("cnn-plain", "CNN, no augmentation", {"train.models": ["cnn"]}, builds_on="ann-plain"),
         progression.Step("cnn-default", "CNN, default recipe", {"train.models": ["cnn"]}, builds_on="cnn-plain"),
         progression.Step("vgg11-bn", "VGG-11", {"train.models": ["vgg11_bn"]}, builds_on="cnn-default")]
BUDGET = "10 % of the training images, 2 folds, 8 epochs of adam (lr 0.002, batch 64)"


def _table() -> pd.DataFrame:
    results = {
        "ann-plain": {"ran": True, "folds": 2, "test_acc_mean": 0.3979, "test_acc_std": 0.004, "macro_f1": 0.39,
                      "train_seconds": 60.0, "budget": BUDGET},
        "cnn-plain": {"ran": True, "folds": 2, "test_acc_mean": 0.4698, "test_acc_std": 0.01, "macro_f1": 0.47,
                      "train_seconds": 120.0, "budget": BUDGET},
        "cnn-default": {"ran": True, "folds": 2, "test_acc_mean": 0.4899, "test_acc_std": 0.002, "macro_f1": 0.49,
                        "train_seconds": 130.0, "budget": BUDGET},
    }  # vgg11-bn did not run
    return progression.progression_table(STEPS, results)


def _history() -> pd.DataFrame:
    return pd.DataFrame([
        {"time": pd.Timestamp("2026-12-01T23:11:06"), "rev": "4b2fc5d", "kind": "commit", "name": "4b2fc5d",
         "model": "cnn", "ensemble_acc": 0.8538},
        {"time": pd.Timestamp("2026-12-08T03:00:00"), "rev": "1234567", "kind": "experiment", "name": "weekly-1",
         "model": "cnn", "ensemble_acc": 0.8401},
    ])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return evaluated_report_inputs(tmp_path_factory.mktemp("reported"))


def _with_results(inputs, tmp_path, record: dict | None = None, text: str | None = None):
    path = tmp_path / "progression" / "results.json"
    path.parent.mkdir()
    if text is not None:
        path.write_text(text)
    else:
        path.write_text(json.dumps(record))
    changed = copy.copy(inputs)
    changed.progression = path
    return changed


def test_the_results_file_round_trips_the_table_and_the_history():
    record = progression.results_record(_table(), _history(), "fast", pd.Timestamp("2026-12-02T01:00:00Z"))
    header, table, history = progression.read_results_from(json.loads(json.dumps(record)))
    assert header["prefix"] == "fast"
    pd.testing.assert_frame_equal(table, _table(), check_dtype=False)
    assert history["ensemble_acc"].tolist() == [0.8538, 0.8401] and history["time"].is_monotonic_increasing


def test_the_section_lists_every_step_its_gain_and_the_published_progression(inputs, tmp_path):
    record = progression.results_record(_table(), _history(), "fast", pd.Timestamp("2026-12-02T01:00:00Z"))
    built = report.build_report(_with_results(inputs, tmp_path, record), REPORT, seed=42)
    section = built.markdown.split("## Progression", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert {"ANN, no augmentation", "CNN, no augmentation", "CNN, default recipe", "VGG-11"} <= set(rows)
    assert "39.79 ± 0.40 %" in rows["ANN, no augmentation"]
    assert "+7.19 points vs ann-plain" in rows["CNN, no augmentation"]
    assert "not run" in rows["VGG-11"] and "— vs cnn-default" in rows["VGG-11"]
    # The study's 54 % and 85 % beside the steps they correspond to, marked as published.
    assert "published, not measured" in section
    assert re.search(r"study, early model.*54\.00 %.*46\.98 % \(cnn-plain\).*-7\.02 points", section)
    assert re.search(r"study, final model.*85\.00 %.*48\.99 % \(cnn-default\).*-36\.01 points", section)
    assert "3 of 4 steps ran" in section and BUDGET in section
    # The retraining history: each run of the default recipe, oldest first.
    assert section.index("4b2fc5d") < section.index("weekly-1") and "84.01 %" in section
    # Two more charts in the HTML: the progression's bars and the history's lines.
    page = built.html.split('<section id="progression">', 1)[1].split("</section>", 1)[0]
    assert page.count("<img ") == 2 and "Retraining history" in page


def test_without_a_results_file_the_section_says_how_to_make_one(inputs, tmp_path):
    changed = copy.copy(inputs)
    changed.progression = tmp_path / "progression" / "results.json"
    built = report.build_report(changed, REPORT, seed=42)
    assert "No progression collected yet" in built.markdown
    assert "python -m flows.progression run --fast" in built.markdown


def test_a_broken_results_file_is_one_line_naming_it(inputs, tmp_path):
    changed = _with_results(inputs, tmp_path, text='{"rows": [')
    with pytest.raises(progression.ProgressionError, match="results.json: not a progression results file"):
        report.build_report(changed, REPORT, seed=42)
