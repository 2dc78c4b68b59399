"""The study's progression rebuilt as DVC experiments: its steps, and the table of their results.

The steps live in presets/progression.yaml: a name, a label, the step it builds on and the `-S`
overrides of params.yaml that make it. flows/progression.py queues one experiment per step and
runs the queue; `progression_table` turns each experiment's metrics files (metrics/evaluate.json
and metrics/train.json) into one row per step: its model's mean ± std test accuracy over the
folds (one view of each image, as the study measured), the ensemble's macro F1, the gain over the
step it builds on and the training time. Steps whose experiment is missing stay in the table as
"not run", so a partial queue still reads. The same file's `fast` overrides, added to every step,
make the fast variant of the whole progression (a CPU-sized budget).

`results_record` and `read_results` carry both tables into progression/results.json, a file in
git that the report stage reads (its "Progression" section), so the report does not need DVC's
experiment refs, which a clone does not have.

`retraining_history` reads every recorded run of the default recipe from `dvc exp show --json`:
each commit whose results come from its own params.yaml (its dvc.lock agrees, tasks/provenance.py)
and each experiment that changed nothing but how the train stage is scheduled (a scheduled
retraining by the deployment, say), in time order, with each model's ensemble test accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tasks.config import TrainParams
from tasks.errors import PipelineError
from tasks.provenance import MISSING, flatten, lock_drift

STEPS_FILE = Path(__file__).resolve().parents[1] / "presets" / "progression.yaml"


class ProgressionError(PipelineError):
    """A malformed steps file (the message names the file, the step and the cause), or a queue
    that DVC could not fill or run."""


@dataclass(frozen=True)
class Step:
    name: str
    label: str
    overrides: dict[str, Any] = field(default_factory=dict)
    builds_on: str | None = None

    @property
    def model(self) -> str:
        return self.overrides["train.models"][0]

    def changes(self) -> str:
        """The overrides as `-S` would spell them, for the table's "what changed" column."""
        return ", ".join(f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                         for k, v in self.overrides.items()) or "nothing (params.yaml)"


def _read(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        reason = " ".join(str(error).split())  # YAML's message spans lines; keep it to one
        raise ProgressionError(f"{path}: cannot read the progression steps: {reason}") from None
    if not isinstance(raw, dict) or set(raw) - {"steps", "fast"}:
        raise ProgressionError(f"{path}: expected 'steps' (and optionally 'fast') at the top, nothing else")
    return raw


def load_fast(path: Path = STEPS_FILE) -> dict[str, Any]:
    """The fast variant's overrides, added to every step (`-S` keys, as in a step's `set`)."""
    fast = _read(path).get("fast")
    if not isinstance(fast, dict) or not fast or "train.models" in fast:
        raise ProgressionError(f"{path}: 'fast' must map -S keys to values (train.models stays each step's own)")
    return fast


def load_steps(path: Path = STEPS_FILE) -> list[Step]:
    """The steps in order, checked: unique names, one model each, `builds_on` an earlier step."""
    raw = _read(path)
    if not isinstance(raw.get("steps"), list) or not raw["steps"]:
        raise ProgressionError(f"{path}: expected a non-empty list under 'steps'")
    steps: list[Step] = []
    for i, item in enumerate(raw["steps"]):
        where = f"{path}: step {i + 1}" + (f" ({item['name']})" if isinstance(item, dict) and "name" in item else "")
        if not isinstance(item, dict) or not {"name", "label"} <= set(item) or set(item) - {"name", "label", "set",
                                                                                             "builds_on"}:
            raise ProgressionError(f"{where}: needs 'name' and 'label', may have 'set' and 'builds_on', nothing else")
        overrides = item.get("set") or {}
        models = overrides.get("train.models")
        if not (isinstance(models, list) and len(models) == 1 and isinstance(models[0], str)):
            raise ProgressionError(f"{where}: 'set' must name exactly one model, as train.models: [<model>]")
        if item["name"] in {s.name for s in steps}:
            raise ProgressionError(f"{where}: the name {item['name']!r} is used twice")
        if item.get("builds_on") is not None and item["builds_on"] not in {s.name for s in steps}:
            raise ProgressionError(f"{where}: builds_on {item['builds_on']!r} is not an earlier step")
        steps.append(Step(str(item["name"]), str(item["label"]), dict(overrides), item.get("builds_on")))
    return steps


def experiment_name(prefix: str, step: Step) -> str:
    return f"{prefix}-{step.name}"


def budget(params: dict | None) -> str | None:
    """The budget an experiment trained at, in words, from its params.yaml (None: unknown)."""
    if not params:
        return None
    split, train = params.get("split") or {}, params.get("train") or {}
    try:
        return (f"{100 * split['subsample']:g} % of the training images, {split['folds']} folds, "
                f"{train['epochs']} epochs of {train['optimizer']} (lr {train['lr']:g}, batch {train['batch_size']})")
    except (KeyError, TypeError, ValueError):
        return None


def step_result(step: Step, evaluation: dict | None, training: dict | None, params: dict | None = None) -> dict:
    """One step's figures from its experiment's metrics files and params.yaml (None: the
    experiment is missing)."""
    metrics = (evaluation or {}).get(step.model)
    if metrics is None:
        return {"step": step.name, "ran": False}
    single = [fold["test_acc_no_tta"] for fold in metrics["folds"].values()]
    return {
        "step": step.name, "ran": True, "folds": len(single),
        "test_acc_mean": float(np.mean(single)),
        "test_acc_std": float(np.std(single, ddof=1)) if len(single) > 1 else 0.0,
        "macro_f1": metrics["ensemble_macro_f1"],
        "train_seconds": ((training or {}).get(step.model) or {}).get("train_seconds"),
        "budget": budget(params),
    }


def progression_table(steps: list[Step], results: dict[str, dict]) -> pd.DataFrame:
    """One row per step, in the steps' order; `gain` is the mean test accuracy minus that of the
    step it builds on (NaN when either did not run or it builds on nothing)."""
    rows = []
    for step in steps:
        result = results.get(step.name) or {"ran": False}
        rows.append({"step": step.name, "label": step.label, "model": step.model, "builds_on": step.builds_on,
                     "changes": step.changes(), "ran": result["ran"],
                     "folds": result.get("folds"), "test_acc_mean": result.get("test_acc_mean", np.nan),
                     "test_acc_std": result.get("test_acc_std", np.nan),
                     "macro_f1": result.get("macro_f1", np.nan),
                     "train_seconds": result.get("train_seconds") if result.get("train_seconds") is not None
                     else np.nan, "budget": result.get("budget")})
    frame = pd.DataFrame(rows)
    accuracy = dict(zip(frame["step"], frame["test_acc_mean"], strict=True))
    frame["gain"] = [a - accuracy[s.builds_on] if s.builds_on else np.nan
                     for a, s in zip(frame["test_acc_mean"], steps, strict=True)]
    return frame


def format_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: percentages, signed gains, durations."""
    def gain(value: float, base: str | None) -> str:
        if base is None:
            return "—"
        return f"— vs {base}" if np.isnan(value) else f"{100 * value:+.2f} points vs {base}"

    return pd.DataFrame({
        "step": frame["label"],
        "what changed": frame["changes"],
        "test accuracy (mean ± std, one view)": [
            "not run" if np.isnan(m) else f"{100 * m:.2f} ± {100 * s:.2f} %"
            for m, s in zip(frame["test_acc_mean"], frame["test_acc_std"], strict=True)],
        "macro F1 (ensemble)": ["—" if np.isnan(v) else f"{v:.3f}" for v in frame["macro_f1"]],
        "gain": [gain(g, b if isinstance(b, str) else None)
                 for g, b in zip(frame["gain"], frame["builds_on"], strict=True)],
        "training time": ["—" if np.isnan(t) else f"{t / 60:.1f} min" for t in frame["train_seconds"]],
    })


# What does not change what a run learns or scores: the train stage's scheduling keys (marked on
# their fields in tasks/config.py: parallelism, task runner, retries, which models) and the
# deployment's and report's sections.
_SCHEDULING = frozenset(f"train.{name}" for name, spec in TrainParams.model_fields.items()
                        if (spec.json_schema_extra or {}).get("scheduling"))
_NOT_RESULTS = ("deploy.", "report.")


def same_recipe(params: dict, baseline: dict) -> bool:
    """Whether `params` differ from `baseline` only in keys that do not change the results."""
    ours, theirs = flatten(params), flatten(baseline)
    keys = {k for k in ours.keys() | theirs.keys() if k not in _SCHEDULING and not k.startswith(_NOT_RESULTS)}
    return all(ours.get(k, MISSING) == theirs.get(k, MISSING) for k in keys)


def _file(data: dict, kind: str, name: str) -> dict:
    return ((data.get(kind) or {}).get(name) or {}).get("data") or {}


def _models_hash(lock: dict) -> str | None:
    """The hash dvc.lock records for the train stage's `models` output: the same for two commits
    when the second trained nothing new."""
    for out in ((lock.get("stages") or {}).get("train") or {}).get("outs") or []:
        if out.get("path") == "models":
            return out.get("md5")
    return None


def retraining_history(exp_show: list[dict], metrics_file: str,
                       lock_at: Callable[[str], dict | None]) -> pd.DataFrame:
    """Every recorded run of the default recipe, oldest first: one row per (run, model) with its
    time, revision, kind (`commit` or `experiment`), name and ensemble test accuracy.

    `exp_show` is `dvc exp show --json --all-commits`; `lock_at(rev)` is the dvc.lock committed at
    a revision (parsed) or None. A commit counts when its dvc.lock agrees with its params.yaml (its
    results are its own settings'); an experiment when it changed nothing that alters results."""
    rows, trained = [], set()

    def add(rev: str, kind: str, name: str | None, data: dict) -> None:
        for model, figures in _file(data, "metrics", metrics_file).items():
            if isinstance(figures, dict) and "ensemble_acc" in figures:
                rows.append({"time": pd.Timestamp(data["timestamp"]), "rev": rev[:7], "kind": kind,
                             "name": name or rev[:7], "model": model, "ensemble_acc": figures["ensemble_acc"]})

    for commit in sorted(exp_show, key=lambda c: (c.get("data") or {}).get("timestamp") or ""):
        data = commit.get("data") or {}
        if commit.get("rev") == "workspace" or not data.get("timestamp"):
            continue
        params = _file(data, "params", "params.yaml")
        lock = lock_at(commit["rev"])
        if params and lock is not None and not lock_drift(lock, params):
            models = _models_hash(lock)  # a commit that changed only code or docs trained nothing new
            if models is None or models not in trained:
                add(commit["rev"], "commit", commit.get("name"), data)
            trained.add(models)
        for exp_range in commit.get("experiments") or []:
            for exp in exp_range.get("revs") or []:
                exp_data = exp.get("data") or {}
                if params and exp_data.get("timestamp") and same_recipe(_file(exp_data, "params", "params.yaml"),
                                                                        params):
                    add(exp["rev"], "experiment", exp.get("name") or exp_range.get("name"), exp_data)
    columns = ["time", "rev", "kind", "name", "model", "ensemble_acc"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["time", "model"], kind="stable").drop_duplicates().reset_index(drop=True)


# ----------------------------------------------------------------------------- the results file

def _plain(value: Any) -> Any:
    """A table cell as JSON: NaN as null, numpy scalars as Python numbers, times as ISO text."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and np.isnan(value) else value


def results_record(table: pd.DataFrame, history: pd.DataFrame, prefix: str, collected: pd.Timestamp) -> dict:
    """What progression/results.json holds: the progression table (its experiments' prefix and
    when they were collected) and the retraining history."""
    return {"prefix": prefix, "collected": collected.isoformat(),
            "rows": [{k: _plain(v) for k, v in row.items()} for row in table.to_dict("records")],
            "history": [{k: _plain(v) for k, v in row.items()} for row in history.to_dict("records")]}


def read_results_from(record: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """A results record (as `results_record` made it) as (its header, the table, the history)."""
    table = pd.DataFrame(record["rows"]).astype({"test_acc_mean": float, "test_acc_std": float,
                                                 "macro_f1": float, "train_seconds": float, "gain": float})
    history = pd.DataFrame(record["history"], columns=["time", "rev", "kind", "name", "model", "ensemble_acc"])
    history["time"] = pd.to_datetime(history["time"], utc=True)
    return {"prefix": record["prefix"], "collected": pd.Timestamp(record["collected"])}, table, history


def read_results(path: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame] | None:
    """progression/results.json as (its header, the table, the history); None if there is none."""
    try:
        return read_results_from(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ProgressionError(f"{path}: not a progression results file ({type(error).__name__}: {error}); "
                               "write it again with `python -m flows.progression table`") from None
