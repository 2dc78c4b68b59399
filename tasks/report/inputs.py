"""Every file the report is made of, read once."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks.paths import Paths
from tasks.tables import read_test


@dataclass
class ReportInputs:
    models: list[str]
    metrics: dict  # metrics/evaluate.json
    details: dict  # eval/details.json
    training: dict[str, list[dict]]  # model -> each fold's models/<model>/fold_<k>/metrics.json
    histories: dict[str, dict[str, pd.DataFrame]]  # model -> "fold_<k>" -> history.csv
    predictions: dict[str, pd.DataFrame]  # model -> the ensemble's test predictions, by id
    images: pd.Series  # id -> (S, S, 3) uint8 test image
    source: dict  # data/raw/source.json
    changes: pd.DataFrame | None  # `dvc metrics diff HEAD` of the metrics file; None: nothing to compare
    progression: Path  # progression/results.json (read by tasks/report/progression.py; may be missing)
    tune: Path  # tune/summary.json (read by tasks/report/tune.py; may be missing)


def metrics_diff(paths: Paths) -> pd.DataFrame | None:
    """DVC's own `dvc metrics diff HEAD --json` for the evaluation metrics, one row per metric
    that changed (metric, HEAD, workspace, change). None when DVC has nothing to compare with:
    not a DVC repository in git, or the file not committed at HEAD."""
    target = str(paths.eval_metrics.relative_to(paths.root))
    try:
        done = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", "HEAD", "--json", "--targets", target],
                              cwd=paths.root, capture_output=True, text=True, timeout=300)
        changes = json.loads(done.stdout).get(target, {}) if done.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    if changes is None or (changes and all(v.get("old") is None for v in changes.values())):
        return None
    return pd.DataFrame([{"metric": k, "HEAD": v.get("old"), "workspace": v.get("new"), "change": v.get("diff")}
                         for k, v in changes.items()], columns=["metric", "HEAD", "workspace", "change"])


def load_inputs(models: tuple[str, ...], paths: Paths) -> ReportInputs:
    """Read every file the report is made of."""
    training, histories = {}, {}
    for model in models:
        folds = paths.trained_folds(model)
        training[model] = [json.loads((d / "metrics.json").read_text()) for d in folds]
        histories[model] = {d.name: pd.read_csv(d / "history.csv") for d in folds}
    columns = ["id", "true", "predicted", "confidence"]
    test = read_test(paths.prepared_test)
    return ReportInputs(
        models=list(models),
        metrics=json.loads(paths.eval_metrics.read_text()),
        details=json.loads(paths.eval_details.read_text()),
        training=training,
        histories=histories,
        predictions={m: pd.read_parquet(paths.predictions / f"{m}.parquet", columns=columns)
                     .set_index("id") for m in models},
        images=pd.Series(list(test.pixels), index=test.ids),
        source=json.loads(paths.source_info.read_text()),
        changes=metrics_diff(paths),
        progression=paths.progression_results,
        tune=paths.tune_summary,
    )
