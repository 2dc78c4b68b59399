"""The report's "Tuning" section: the Optuna study of params.yaml's `tune` section, read from
tune/summary.json (`python -m flows.tune table` writes it after `dvc repro tune/dvc.yaml`).

The study scores trials on one fold's validation images, never on the test set: its figures are
validation accuracies at the study's own short budget, not the baseline's test accuracies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks import tune_results
from tasks.report.figures import Picture, picture
from tasks.report.text import pct, points

HOW = ("`dvc repro tune/dvc.yaml` runs the study of params.yaml's `tune` section and "
       "`python -m flows.tune table` collects it into tune/summary.json")


def history(trials: pd.DataFrame, baseline: float | None) -> Figure:
    """Each trial's validation accuracy in trial order (pruned ones at the last epoch they
    reported), the best so far as a step line, params.yaml's recipe as a dashed line."""
    fig = Figure(figsize=(9, 3.4))
    ax = fig.subplots()
    for state, style in (("COMPLETE", dict(marker="o", color="#4c72b0", label="completed")),
                         ("PRUNED", dict(marker="x", color="#8c8c8c", label="pruned (last reported epoch)"))):
        part = trials[trials["state"] == state]
        ax.plot(part["number"], 100 * part["value"], ls="none", **style)
    done = trials[trials["state"] == "COMPLETE"].sort_values("number")
    ax.step(done["number"], 100 * done["value"].cummax(), where="post", color="#1a7f37", label="best so far")
    if baseline is not None:
        ax.axhline(100 * baseline, ls="--", color="#cf222e", lw=1, label="params.yaml's recipe (trial 0)")
    ax.set(xlabel="trial", ylabel="validation accuracy, %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def importances(values: dict[str, float]) -> Figure:
    """Optuna's fANOVA importance of each tuned key, largest on top."""
    keys = sorted(values, key=values.get)
    fig = Figure(figsize=(7, 0.35 * len(keys) + 1.2))
    ax = fig.subplots()
    ax.barh(np.arange(len(keys)), [values[k] for k in keys], color="#4c72b0")
    ax.set_yticks(np.arange(len(keys)), keys)
    ax.set(xlabel="importance for the validation accuracy (fANOVA, sums to 1)")
    ax.grid(axis="x", alpha=0.3)
    return fig


def _recipes(record: dict) -> pd.DataFrame:
    best = record["summary"]["best_params"]
    return pd.DataFrame([{"key": key, "params.yaml": record["baseline"].get(key), "best trial": value}
                         for key, value in best.items()], dtype=object)


def failed_note(failed: int) -> str:
    """The count of failed trials for the section's first sentence (empty when none failed)."""
    return f", {failed} failed (the loss diverged, or the worker stopped)" if failed else ""


def items(path: Path) -> list[str | pd.DataFrame | Picture]:
    """The section's paragraphs, table and charts; one paragraph while no study was collected."""
    record = tune_results.read_results(path)
    if record is None or record["summary"] is None:
        state = f"{path} is missing" if record is None else f"study {record['study']} has no completed trial"
        return [f"No tuning study collected yet ({state}): {HOW}."]
    s = record["summary"]
    trials = pd.DataFrame(record["trials"]).astype({"value": float})
    gain = (f", {points(s['gain'])} points against {pct(s['baseline_val_acc'])} for params.yaml's recipe "
            "(trial 0)" if s["baseline_val_acc"] is not None else "")
    out: list[str | pd.DataFrame | Picture] = [
        f"Optuna study `{record['study']}`, collected {record['collected'][:16].replace('T', ' ')} UTC: "
        f"`{record['model']}` on fold {record['fold']}'s training and validation images (never the test set), "
        f"every trial {record['epochs']} epochs on {record['subsample']:.0%} of the fold's training images, "
        f"{record['pruner']} pruner. {s['trials']} trials: {s['completed']} completed, {s['pruned']} pruned"
        f"{failed_note(s.get('failed', 0))}. "
        f"Best: trial {s['best_trial']}, validation accuracy {pct(s['best_val_acc'])}{gain}. These are validation "
        "accuracies at the study's short budget; what the recipe is worth at the full budget is a run of its "
        "own: `python -m flows.train_compare run --preset tune/best.yaml`.",
        _recipes(record),
        picture("Tuning: optimisation history", history(trials, s["baseline_val_acc"]),
                "Each trial's validation accuracy (pruned trials at the last epoch they reported), the best so "
                "far, and params.yaml's recipe at the same budget."),
    ]
    if record["importances"]:
        out.append(picture("Tuning: parameter importances", importances(record["importances"]),
                           "How much of the validation accuracy's variation over the completed trials each "
                           "tuned key explains (Optuna's fANOVA evaluator, seeded)."))
    return out
