"""The study's published figures (published.yaml, checked in) beside the measured ones.

Published figures are what the study reported, never recomputed here: the table marks them
"published, not measured" and gives the measured figure of the same kind and the difference.
Accuracies are compared on one view of each image (no test-time augmentation), as the study
measured them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from tasks.report.inputs import ReportInputs
from tasks.report.text import display_name, pct, points

PUBLISHED_FILE = Path(__file__).with_name("published.yaml")
MARK = "published, not measured"


def load_published(path: Path = PUBLISHED_FILE) -> dict:
    return yaml.safe_load(path.read_text())


def _points(measured: float | None, published: float) -> str:
    return "—" if measured is None else f"{points(measured - published)} points"


def _against_range(measured: float, low: float, high: float) -> str:
    if measured < low:
        return f"{100 * (measured - low):+.2f} points below the range"
    if measured > high:
        return f"{100 * (measured - high):+.2f} points above the range"
    return "within the range"


def comparison(inputs: ReportInputs, published: dict) -> pd.DataFrame | None:
    """One row per published figure; None when the run did not train the study's model."""
    model = published["model"]
    if model not in inputs.models:
        return None
    name, metrics = display_name(model), inputs.metrics[model]
    measured = {f["fold"]: metrics["folds"][f"fold_{f['fold']}"]["test_acc_no_tta"] for f in inputs.training[model]}
    per_fold, progression = published["per_fold"], published["progression"]
    rows = []
    for k, value in enumerate(per_fold["test_accuracy"]):
        rows.append((f"{name} fold {k}: test accuracy", per_fold["source"], pct(value),
                     pct(measured.get(k)), _points(measured.get(k), value)))
    mean = metrics["test_acc_no_tta_mean"]
    rows.append((f"{name}, mean of the folds: test accuracy", per_fold["source"],
                 pct(per_fold["mean_test_accuracy"]), pct(mean), _points(mean, per_fold["mean_test_accuracy"])))
    loss = sum(per_fold["test_loss"]) / len(per_fold["test_loss"])
    rows.append((f"{name}, mean of the folds: test loss", per_fold["source"], f"{loss:.4f}",
                 f"{metrics['test_loss_mean']:.4f}", f"{metrics['test_loss_mean'] - loss:+.4f}"))
    rows.append((f"{name}, final model (rounded)", progression["source"], pct(progression["final"]), pct(mean),
                 _points(mean, progression["final"])))
    rows.append(("early CNN, no sampling or augmentation", progression["source"], pct(progression["early"]),
                 "not in this run", "—"))
    report = inputs.details["models"][model]["ensemble"]["report"]
    for cls, (low, high) in ((c, r) for c, r in published["weakest_classes"].items() if c != "source"):
        recall = report[cls]["recall"] if cls in report else None
        rows.append((f"{name}: recall of {cls}", published["weakest_classes"]["source"],
                     f"{100 * low:.0f}–{100 * high:.0f} % over the folds",
                     "—" if recall is None else f"{pct(recall)} (ensemble)",
                     "—" if recall is None else _against_range(recall, low, high)))
    return pd.DataFrame(rows, columns=["figure", "source", MARK, "measured here", "difference"])


def comparison_in_words(inputs: ReportInputs, published: dict) -> list[str]:
    model = display_name(published["model"])
    if published["model"] not in inputs.models:
        return [f"The study's published figures are for its {model}, which this run did not train."]
    tta = " (the flip-TTA outputs, as every loss in this report)" if inputs.details["tta_flip"] else ""
    return [
        f"The study's figures ({PUBLISHED_FILE.name} beside the report's code) next to this run's. Accuracies "
        "here are of one view of each image, as the study measured them. Fold k here and fold k of the study "
        "hold different images, so the mean is the figure to compare. Measured test losses are of the "
        f"model's softmax outputs{tta}; label smoothing in training raises them, so they compare "
        "only roughly.",
        published["f1_note"],
    ]
