"""Where the stages read and write: the one home of every path in the pipeline.

`dvc.yaml` names the same paths as the stages' deps and outs (tests/test_dvc_yaml.py checks that
every path it names is one of these). Stages take a `Paths`; tests point one at a temporary
folder. This module imports nothing heavy, so any stage can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMP_WORKSPACES = (".dvc", "tmp", "exps")  # where `dvc exp run --temp` makes its workspaces


def project_dir(path: Path | None = None) -> Path:
    """The project a path lies in: `path` itself (default: the current directory) or, inside a
    temporary workspace that `dvc exp run --temp` made under <project>/.dvc/tmp/exps/, the
    project it was made from. What must outlive such a workspace lives there: the training
    checkpoints, and local data sources named by a relative path."""
    path = (path or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(TEMP_WORKSPACES) + 1):
        if parts[i:i + len(TEMP_WORKSPACES)] == TEMP_WORKSPACES:
            return Path(*parts[:i])
    return path


@dataclass(frozen=True)
class Paths:
    root: Path = Path(".")

    # download: the verified archive and where it came from
    @property
    def raw(self) -> Path:
        return self.root / "data/raw"

    @property
    def source_info(self) -> Path:
        return self.raw / "source.json"

    @property
    def partial_download(self) -> Path:
        return self.root / "data/raw.partial"  # outside DVC's outputs, so a retry can resume

    # prepare: one Parquet table per split, and the summary metric
    @property
    def prepared(self) -> Path:
        return self.root / "data/prepared"

    @property
    def prepared_train(self) -> Path:
        return self.prepared / "train.parquet"

    @property
    def prepared_test(self) -> Path:
        return self.prepared / "test.parquet"

    @property
    def prepared_summary(self) -> Path:
        return self.prepared / "summary.json"

    # split: the holdout, the folds, each fold's (balanced) training ids, class counts
    @property
    def splits(self) -> Path:
        return self.root / "data/splits"

    @property
    def holdout(self) -> Path:
        return self.splits / "holdout.parquet"

    @property
    def folds(self) -> Path:
        return self.splits / "folds.parquet"

    @property
    def train_index(self) -> Path:
        return self.splits / "train_index.parquet"

    @property
    def class_counts(self) -> Path:
        return self.splits / "class_counts.csv"

    # train: weights, history and metrics per (model, fold); learning curves; resumable state
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def train_logs(self) -> Path:
        return self.root / "logs/train"

    @property
    def train_metrics(self) -> Path:
        return self.root / "metrics/train.json"

    @property
    def checkpoints(self) -> Path:
        # Outside DVC's outputs (DVC deletes those before a re-run) and outside temporary
        # experiment workspaces (deleted after their run), so every run can resume.
        return project_dir(self.root) / "checkpoints"

    def fold_dir(self, model: str, fold: int) -> Path:
        return self.models / model / f"fold_{fold}"

    def fold_log_dir(self, model: str, fold: int) -> Path:
        return self.train_logs / model / f"fold_{fold}"

    def trained_folds(self, model: str) -> list[Path]:
        """`models/<model>/fold_<k>` folders holding weights, in fold order; an error if none."""
        found = [d for d in (self.models / model).glob("fold_*") if (d / "weights.pt").exists()]
        if not found:
            raise FileNotFoundError(f"{self.models / model}: no trained fold (fold_<k>/weights.pt); "
                                    f"run the train stage for {model!r} first")
        return sorted(found, key=lambda d: int(d.name.removeprefix("fold_")))

    # evaluate: test-set predictions, tables for `dvc plots`, details and the metrics
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def predictions(self) -> Path:
        return self.eval / "predictions"

    @property
    def eval_plots(self) -> Path:
        return self.eval / "plots"

    @property
    def confusion_tables(self) -> Path:
        return self.eval_plots / "confusion"

    @property
    def class_f1_tables(self) -> Path:
        return self.eval_plots / "class_f1"

    @property
    def eval_details(self) -> Path:
        return self.eval / "details.json"

    @property
    def eval_metrics(self) -> Path:
        return self.root / "metrics/evaluate.json"

    # report
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report_html(self) -> Path:
        return self.reports / "report.html"

    @property
    def report_md(self) -> Path:
        return self.reports / "report.md"

    # progression: the collected table of the progression's experiments (flows/progression.py
    # writes it from `dvc exp show`; the report reads it, so it must live in git, not in DVC)
    @property
    def progression_results(self) -> Path:
        return self.root / "progression/results.json"

    # tune (not on the default `dvc repro` path: tune/dvc.yaml): the Optuna study and its results
    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def tune_trials(self) -> Path:
        return self.tune / "trials.parquet"

    @property
    def tune_best(self) -> Path:
        return self.tune / "best.yaml"

    @property
    def tune_summary(self) -> Path:
        return self.tune / "summary.json"

    @property
    def tune_storage(self) -> Path:
        return self.tune / "study.db"  # the default SQLite storage (tune.storage = "")

    @property
    def tune_history_plot(self) -> Path:
        return self.tune / "history.png"

    @property
    def tune_importance_plot(self) -> Path:
        return self.tune / "importance.png"
