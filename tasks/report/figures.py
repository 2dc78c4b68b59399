"""The report's figures: one builder per kind, each returning one figure per model.

Figure objects, not pyplot: their PNGs are drawn by the Agg canvas, with no GUI backend and no
global state, so the report renders the same with or without a display (and in threads).
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tasks.config import ReportParams
from tasks.report.inputs import ReportInputs
from tasks.report.text import display_name, jpeg_note, sample_ids

RIGHT, WRONG = "#1a7f37", "#cf222e"


@dataclass
class Picture:
    model: str
    title: str
    png: str  # base64
    caption: str


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _picture(model: str, title: str, figure: Figure, caption: str, inputs: ReportInputs) -> Picture:
    note = jpeg_note(inputs.source)
    return Picture(model, f"{display_name(model)}: {title}", _png(figure), f"{caption} {note}".strip())


def picture(title: str, figure: Figure, caption: str) -> Picture:
    """A figure that is not one model's (the progression's, say)."""
    return Picture("", title, _png(figure), caption)


# ----------------------------------------------------------------------------- drawings

def learning_curves(histories: dict[str, pd.DataFrame], model: str) -> Figure:
    """Accuracy and loss per epoch: training dashed, validation solid, one colour per fold."""
    fig = Figure(figsize=(11, 3.6))
    acc, loss = fig.subplots(1, 2)
    for i, (fold, h) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        for ax, key in ((acc, "acc"), (loss, "loss")):
            ax.plot(h["epoch"], h[f"train/{key}"], "--", color=colour, label=f"{fold} train")
            ax.plot(h["epoch"], h[f"val/{key}"], "-", color=colour, label=f"{fold} validation")
    for ax, label in ((acc, "accuracy"), (loss, "loss (cross-entropy)")):
        ax.set(xlabel="epoch", ylabel=label, title=f"{display_name(model)}: {label}")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    loss.legend(fontsize=8, loc="upper right", ncol=2 if len(histories) > 3 else 1)
    return fig


def confusion_heatmap(confusion: list[list[int]], classes: list[str], model: str) -> Figure:
    """Counts, shaded by the share of each true class (rows sum to 100 %)."""
    counts = np.asarray(confusion)
    share = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center", fontsize=7,
                color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="actual", title=f"{display_name(model)} ensemble")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the actual class")
    return fig


def image_grid(images: list[np.ndarray], rows: pd.DataFrame, columns: int = 6) -> Figure:
    """Test images titled with the actual and the predicted class (`rows`: true, predicted,
    confidence), framed green when right and red when wrong."""
    lines = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(2.0 * columns, 2.45 * lines))
    axes = np.atleast_1d(fig.subplots(lines, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, row in zip(axes, images, rows.itertuples(), strict=False):
        right = row.true == row.predicted
        colour = RIGHT if right else WRONG
        ax.set_axis_on()
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color=colour, linewidth=3)
        ax.set_title(f"{'✓ right' if right else '✗ wrong'} ({100 * row.confidence:.0f} % sure)\n"
                     f"actual: {row.true}\npredicted: {row.predicted}", fontsize=9, color=colour)
    fig.subplots_adjust(hspace=0.75, wspace=0.35)
    return fig


# ----------------------------------------------------------------------------- one builder per kind

def learning_curve_figures(inputs: ReportInputs) -> list[Picture]:
    return [_picture(model, "learning curves", learning_curves(inputs.histories[model], model),
                     f"{display_name(model)}: training (dashed) and validation (solid) accuracy and loss "
                     "per epoch, one colour per fold. Training figures are measured on augmented images "
                     "while the epoch runs (and the training loss includes any label smoothing), so they "
                     "can sit below the validation ones.", inputs)
            for model in inputs.models]


def confusion_figures(inputs: ReportInputs) -> list[Picture]:
    classes = inputs.details["classes"]
    return [_picture(model, "confusion matrix",
                     confusion_heatmap(inputs.details["models"][model]["ensemble"]["confusion"], classes, model),
                     f"{display_name(model)} fold ensemble on the {inputs.details['test_images']:,} test "
                     "images: counts, shaded by the share of the actual class.", inputs)
            for model in inputs.models]


def sample_figures(inputs: ReportInputs, params: ReportParams, seed: int) -> list[Picture]:
    ids = sample_ids(inputs.images.index.to_numpy(), params.sample_images, seed)
    pictures = []
    for model in inputs.models:
        sample = inputs.predictions[model].loc[ids]
        right = int((sample["true"] == sample["predicted"]).sum())
        pictures.append(_picture(model, "sample predictions", image_grid(list(inputs.images.loc[ids]), sample),
                                 f"{display_name(model)} fold ensemble on {len(ids)} test images drawn at "
                                 f"random (seed {seed}): {right} right, {len(ids) - right} wrong; \"sure\" is "
                                 "the ensemble's top softmax output.", inputs))
    return pictures


def mistake_figures(inputs: ReportInputs, params: ReportParams) -> list[Picture]:
    pictures = []
    for model in inputs.models if params.mistakes else []:
        frame = inputs.predictions[model]
        wrong = frame[frame["true"] != frame["predicted"]]
        worst = wrong.sort_values("confidence", ascending=False, kind="stable").head(params.mistakes)
        if worst.empty:
            continue
        pictures.append(_picture(model, "most confident mistakes",
                                 image_grid(list(inputs.images.loc[worst.index]), worst),
                                 f"The {len(worst)} wrong predictions of the {display_name(model)} fold "
                                 f"ensemble with the highest confidence, out of {len(wrong):,} mistakes.",
                                 inputs))
    return pictures
