"""The report's "Progression" section: the study's progression rebuilt as DVC experiments, and
the retraining history of the default recipe, read from progression/results.json.

That file is written by `python -m flows.progression run` or `table` (tasks/progression.py) and
kept in git: the experiments themselves live in DVC's refs, which a clone does not have, while
the report must render anywhere the pipeline runs. The study's own progression (54 % -> 85 %)
stands beside the measured one, marked "published, not measured".
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks import progression
from tasks.report.figures import Picture, picture
from tasks.report.study import MARK
from tasks.report.text import display_name, pct, points

# Which measured step each published progression figure stands beside.
PUBLISHED_STEPS = {"early": "cnn-plain", "final": "cnn-default"}


def bars(table: pd.DataFrame, published: dict) -> Figure:
    """Each step's mean test accuracy (± std over its folds) as a bar, in the steps' order; the
    study's published 54 % and 85 % as dashed lines."""
    ran = table[~table["test_acc_mean"].isna()]
    fig = Figure(figsize=(9, 0.45 * max(len(ran), 2) + 1.4))
    ax = fig.subplots()
    y = np.arange(len(ran))[::-1]
    ax.barh(y, 100 * ran["test_acc_mean"], xerr=100 * ran["test_acc_std"].fillna(0), color="#4c72b0",
            capsize=3)
    for yi, value in zip(y, ran["test_acc_mean"], strict=True):
        ax.text(100 * value + 0.8, yi, f"{100 * value:.1f} %", va="center", fontsize=8)
    for key, colour in (("early", "#cf222e"), ("final", "#1a7f37")):
        value = published["progression"][key]
        ax.axvline(100 * value, ls="--", color=colour, lw=1, label=f"study, {key}: {100 * value:.0f} % ({MARK})")
    ax.set_yticks(y, ran["step"])
    ax.set(xlabel="test accuracy, %: mean over the folds, one view", xlim=(0, 100))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def history_lines(history: pd.DataFrame) -> Figure:
    """Each model's ensemble test accuracy per recorded run of the default recipe, in time order:
    commits as circles, the deployment's experiments as squares."""
    fig = Figure(figsize=(9, 3.4))
    ax = fig.subplots()
    for i, (model, rows) in enumerate(history.groupby("model", sort=True)):
        rows = rows.sort_values("time")
        ax.plot(rows["time"], 100 * rows["ensemble_acc"], "-", color=f"C{i}", label=display_name(model))
        for kind, marker in (("commit", "o"), ("experiment", "s")):
            part = rows[rows["kind"] == kind]
            ax.plot(part["time"], 100 * part["ensemble_acc"], marker, color=f"C{i}", ls="none")
    ax.set(ylabel="ensemble test accuracy, %", xlabel="run (UTC): ● commit, ■ experiment")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return fig


def _published_table(table: pd.DataFrame, published: dict) -> pd.DataFrame:
    measured = dict(zip(table["step"], table["test_acc_mean"], strict=True))
    source = published["progression"]["source"]
    rows = []
    for key, step in PUBLISHED_STEPS.items():
        value, ours = published["progression"][key], measured.get(step, np.nan)
        rows.append({"figure": f"study, {key} model", "source": source, MARK: pct(value),
                     "measured here": "not run" if np.isnan(ours) else f"{pct(ours)} ({step})",
                     "difference": "—" if np.isnan(ours) else f"{points(ours - value)} points"})
    return pd.DataFrame(rows)


def _history_table(history: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"run (UTC)": history["time"].dt.strftime("%Y-%m-%d %H:%M"), "kind": history["kind"],
                         "revision": history["rev"], "name": history["name"],
                         "model": history["model"].map(display_name),
                         "ensemble test accuracy": history["ensemble_acc"].map(pct)})


def items(path: Path, published: dict) -> list[str | pd.DataFrame | Picture]:
    """The section's paragraphs, tables (data frames) and charts; one paragraph when there is no file."""
    found = progression.read_results(path)
    if found is None:
        return [f"No progression collected yet ({path} is missing): `python -m flows.progression run --fast` "
                "queues and runs it, `python -m flows.progression table` collects it."]
    header, table, history = found
    ran = int(table["ran"].sum())
    budgets = sorted({b for b in table["budget"].dropna()})
    out: list[str | pd.DataFrame | Picture] = [
        f"The study's progression rebuilt one change at a time, each step a DVC experiment "
        f"(`{header['prefix']}-<step>`, presets/progression.yaml), collected {header['collected']:%Y-%m-%d %H:%M} "
        f"UTC by `python -m flows.progression` into {path.name}: {ran} of {len(table)} steps ran. Test accuracy is "
        "the step's model's mean over its folds on one view of each test image; the gain is against the step it "
        "builds on; macro F1 is of the fold ensemble (scikit-learn's)."
        + (f" Budget: {'; '.join(budgets)}." if budgets else ""),
    ]
    if ran:
        out.append(progression.format_table(table))
        out.append(_published_table(table, published))
        out.append(picture("Progression: test accuracy per step", bars(table, published),
                           "Each step's mean test accuracy over its folds (one view), ± its standard deviation; "
                           f"the study's published 54 % and 85 % as dashed lines ({MARK})."))
    else:
        out.append("None of its experiments has results yet.")
    if history.empty:
        out.append("Retraining history: no recorded run of the default recipe yet.")
    else:
        out.append("Retraining history: every recorded run of the default recipe, oldest first (commits whose "
                   "dvc.lock agrees with their params.yaml, and experiments that changed only how training is "
                   "scheduled, such as the deployment's scheduled retraining). A retraining that got worse stands "
                   "out as a drop.")
        out.append(_history_table(history))
        out.append(picture("Retraining history", history_lines(history),
                           "Each model's fold-ensemble test accuracy per recorded run of the default recipe."))
    return out
