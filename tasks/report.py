"""The report: `reports/report.html` (self-contained, figures embedded) and `reports/report.md`.

Everything in them is read from the pipeline's files: the evaluation metrics and details, each
fold's training metrics and history, the ensembles' test predictions and the test images.
Nothing is typed in by hand. Steps: `load_inputs` -> `build_report` -> `write_report` (wired in
flows/report.py, which also publishes the result as Prefect artifacts).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# Figure objects, not pyplot: their PNGs are drawn by the Agg canvas, with no GUI backend and no
# global state, so the report renders the same with or without a display (and in threads).
from matplotlib.figure import Figure

from tasks.config import ReportParams
from tasks.io import write_atomic
from tasks.paths import Paths
from tasks.prepare import read_test

COMMAND = "python -m flows.report"  # the `report` stage of `dvc repro`
RIGHT, WRONG = "#1a7f37", "#cf222e"


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
    previous: dict | None  # metrics/evaluate.json as committed at HEAD, if it is


@dataclass
class Report:
    html: str
    markdown: str
    headline: list[dict]  # one row per model, as displayed


# ----------------------------------------------------------------------------- inputs

def previous_metrics(path: Path) -> dict | None:
    """The metrics file as committed at git's HEAD; None outside git or when not committed."""
    path = Path(path)
    try:
        done = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return None


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
        previous=previous_metrics(paths.eval_metrics),
    )


# ----------------------------------------------------------------------------- words and tables

def display_name(model: str) -> str:
    return {"ann": "ANN", "cnn": "CNN"}.get(model, model)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _p(value: float | None) -> str:
    if value is None:
        return "p = n/a"
    return "p < 0.0001" if value < 1e-4 else f"p = {value:.2g}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def jpeg_note(source: dict) -> str:
    """The caveat every figure carries when the images came from the shared JPEG archive."""
    where = f"{source.get('source', '')} {source.get('file', '')}".lower()
    if "jpeg" in where or "jpg" in where:
        return ("Test images come from the shared JPEG copy of CIFAR-10: accuracies on it can "
                "differ slightly from those on the official pickled batches.")
    return ""


def headline(inputs: ReportInputs) -> list[dict]:
    """The comparison table: one row per model, formatted for reading."""
    rows = []
    for model in inputs.models:
        m, folds = inputs.metrics[model], inputs.training[model]
        early = sum(f["stopped"] != "max epochs" for f in folds)
        rows.append({
            "model": display_name(model),
            "test accuracy (mean ± std)": f"{100 * m['test_acc_mean']:.2f} ± "
                                          f"{100 * m['test_acc_std']:.2f} %",
            "ensemble accuracy": _pct(m["ensemble_acc"]),
            "parameters": f"{folds[0]['parameters']:,}",
            "training time": _duration(sum(f["train_seconds"] for f in folds)),
            "epochs run per fold": ", ".join(str(f["epochs"]) for f in folds),
            "early stops": f"{early} of {len(folds)}",
        })
    return rows


HEADLINE_NOTE = ("Test accuracy: mean ± standard deviation over the folds' models on the test set; "
                 "ensemble: the mean of the folds' softmax outputs; training time: all folds, "
                 "validation excluded; early stops: folds stopped before the epoch limit because "
                 "the validation loss no longer improved.")


def statistics_in_words(inputs: ReportInputs) -> list[str]:
    """The statistical comparisons in plain words, one paragraph per pair, then calibration."""
    out = []
    for pair in inputs.details["comparisons"].values():
        a, b = display_name(pair["model"]), display_name(pair["baseline"])
        t, mc = pair["t_test"], pair["mcnemar"]
        diff = 100 * t["mean_diff"]
        if abs(diff) < 0.005:  # what rounds to 0.00 points
            verb = f"the {a} and the {b} tie in test accuracy"
        elif diff > 0:
            verb = f"the {a} beats the {b} by {diff:.2f} points of test accuracy"
        else:
            verb = f"the {a} trails the {b} by {-diff:.2f} points of test accuracy"
        if t["t_pvalue"] is None:
            test = f"a paired t-test is not possible: {t['note']}"
        else:
            verdict = "significant" if t["t_pvalue"] < 0.05 else "not significant"
            test = (f"paired t-test on the per-fold accuracies: t = {t['t_statistic']:.2f}, "
                    f"{_p(t['t_pvalue'])}, {verdict} at the 5 % level")
        acc = {k: inputs.metrics[pair[k]]["ensemble_acc"] for k in ("model", "baseline")}
        verdict = "significant" if mc["pvalue"] < 0.05 else "not significant"
        out.append(
            f"Over {t['folds']} folds, {verb} on average ({test}). "
            f"The fold ensembles ({a} {_pct(acc['model'])}, {b} {_pct(acc['baseline'])}) disagree "
            f"on {mc['only_a'] + mc['only_b']:,} test images: only the {a} is right on "
            f"{mc['only_a']:,}, only the {b} on {mc['only_b']:,} (McNemar's test, {mc['method']}: "
            f"{_p(mc['pvalue'])}, {verdict} at the 5 % level).")
    bins = inputs.details["calibration_bins"]
    eces = ", ".join(f"{display_name(m)} {inputs.metrics[m]['ece']:.3f}" for m in inputs.models)
    out.append(f"Expected calibration error of the ensembles ({bins} equal-width confidence bins; "
               f"0 = the confidence matches the accuracy): {eces}.")
    return out


def _flatten(tree: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = value
    return flat


def metric_changes(previous: dict, current: dict) -> list[dict]:
    """What `dvc metrics diff` prints: every metric that changed, was added or was removed."""
    old, new = _flatten(previous), _flatten(current)
    rows = []
    for key in [*new, *(k for k in old if k not in new)]:
        before, after = old.get(key), new.get(key)
        if before == after:
            continue
        change = None if before is None or after is None else round(after - before, 6)
        rows.append({"metric": key, "HEAD": before, "workspace": after, "change": change})
    return rows


# ----------------------------------------------------------------------------- figures

def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


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


def image_grid(images: list[np.ndarray], true: list[str], predicted: list[str],
               confidence: list[float], columns: int = 6) -> Figure:
    """Test images titled with the actual and the predicted class, framed green or red."""
    rows = max(1, math.ceil(len(images) / columns))
    fig = Figure(figsize=(2.0 * columns, 2.45 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, t, p, c in zip(axes, images, true, predicted, confidence, strict=False):
        colour = RIGHT if t == p else WRONG
        ax.set_axis_on()
        ax.imshow(image, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set(color=colour, linewidth=3)
        mark = "✓ right" if t == p else "✗ wrong"
        ax.set_title(f"{mark} ({100 * c:.0f} % sure)\nactual: {t}\npredicted: {p}", fontsize=9,
                     color=colour)
    fig.subplots_adjust(hspace=0.75, wspace=0.35)
    return fig


# ----------------------------------------------------------------------------- documents

@dataclass
class _Figure:
    section: str  # the id of the section it belongs to
    model: str
    title: str
    png: str  # base64
    caption: str


def _table_html(rows: list[dict], table_id: str = "") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r.values())
                   + "</tr>" for r in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _table_md(rows: list[dict]) -> str:
    if not rows:
        return ""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(_cell(v).replace("|", "\\|") for v in r.values()) + " |"
              for r in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def class_report_rows(report: dict, classes: list[str]) -> list[dict]:
    """scikit-learn's classification report (a dict) as table rows."""
    rows = []
    for name in [*classes, "macro avg", "weighted avg"]:
        r = report[name]
        rows.append({"class": name, "precision": f"{r['precision']:.3f}",
                     "recall": f"{r['recall']:.3f}", "F1": f"{r['f1-score']:.3f}",
                     "support": f"{int(r['support']):,}"})
    return rows


def fold_rows(inputs: ReportInputs) -> list[dict]:
    """Test accuracy, loss and ECE of every fold's model, next to its validation accuracy."""
    rows = []
    for model in inputs.models:
        for train in inputs.training[model]:
            fold = inputs.metrics[model]["folds"][f"fold_{train['fold']}"]
            rows.append({"model": display_name(model), "fold": train["fold"],
                         "validation accuracy": _pct(train["val_acc"]),
                         "test accuracy": _pct(fold["test_acc"]), "test loss": f"{fold['test_loss']:.4f}",
                         "ECE": f"{fold['ece']:.4f}", "best epoch": train["best_epoch"],
                         "stopped": train["stopped"]})
    return rows


def sample_ids(ids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` test ids drawn with `seed`: the same images for every model and on every run."""
    return np.random.default_rng(seed).choice(ids, min(count, len(ids)), replace=False)


def _figures(inputs: ReportInputs, params: ReportParams, seed: int) -> list[_Figure]:
    note = jpeg_note(inputs.source)
    classes = inputs.details["classes"]
    figures = []
    for model in inputs.models:
        name = display_name(model)
        figures.append(_Figure("learning-curves", model, f"{name}: learning curves",
                               _png(learning_curves(inputs.histories[model], model)),
                               f"{name}: training (dashed) and validation (solid) accuracy and loss "
                               f"per epoch, one colour per fold. Training figures are measured on "
                               f"augmented images while the epoch runs (and the training loss "
                               f"includes any label smoothing), so they can sit below the "
                               f"validation ones. {note}"))
    for model in inputs.models:
        name = display_name(model)
        ensemble = inputs.details["models"][model]["ensemble"]
        figures.append(_Figure("confusion", model, f"{name}: confusion matrix",
                               _png(confusion_heatmap(ensemble["confusion"], classes, model)),
                               f"{name} fold ensemble on the {inputs.details['test_images']:,} test "
                               f"images: counts, shaded by the share of the actual class. {note}"))
    ids = sample_ids(inputs.images.index.to_numpy(), params.sample_images, seed)
    for model in inputs.models:
        name = display_name(model)
        sample = inputs.predictions[model].loc[ids]
        right = int((sample["true"] == sample["predicted"]).sum())
        figures.append(_Figure("samples", model, f"{name}: sample predictions",
                               _png(image_grid(list(inputs.images.loc[ids]), list(sample["true"]),
                                               list(sample["predicted"]),
                                               list(sample["confidence"]))),
                               f"{name} fold ensemble on {len(ids)} test images drawn at random "
                               f"(seed {seed}): {right} right, {len(ids) - right} wrong; "
                               f"\"sure\" is the ensemble's top softmax output. {note}"))
    if params.mistakes:
        for model in inputs.models:
            name = display_name(model)
            frame = inputs.predictions[model]
            wrong = frame[frame["true"] != frame["predicted"]]
            worst = wrong.sort_values("confidence", ascending=False, kind="stable")
            worst = worst.head(params.mistakes)
            if worst.empty:
                continue
            figures.append(_Figure("mistakes", model, f"{name}: most confident mistakes",
                                   _png(image_grid(list(inputs.images.loc[worst.index]),
                                                   list(worst["true"]), list(worst["predicted"]),
                                                   list(worst["confidence"]))),
                                   f"The {len(worst)} wrong predictions of the {name} fold ensemble "
                                   f"with the highest confidence, out of {len(wrong):,} mistakes. "
                                   f"{note}"))
    for figure in figures:
        figure.caption = figure.caption.strip()  # without the note there is a trailing space
    return figures


SECTIONS = {  # id -> heading, in the order they appear
    "headline": "Headline comparison",
    "tests": "Statistical tests",
    "learning-curves": "Learning curves",
    "confusion": "Confusion matrices and classification reports",
    "samples": "Sample predictions",
    "mistakes": "Most confident mistakes",
    "changes": "Change against the previous commit",
}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1180px;margin:24px auto;
padding:0 20px;color:#1f2328;line-height:1.45}
h1{margin-bottom:4px}h2{border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:10px 0;font-size:14px}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:right}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
figure{margin:14px 0}img{max-width:100%;height:auto}
figcaption{font-size:13px;color:#57606a;max-width:900px}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
.pair>figure{flex:0 1 660px;min-width:0}
.meta,.note{color:#57606a;font-size:14px}code{background:#f6f8fa;padding:1px 4px}
"""

# Lets a headless browser (tests/integration/test_report_browser.py) see that every figure decoded.
_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-images-loaded", loaded + "/" + images.length);
});
"""


def _changes(inputs: ReportInputs) -> tuple[list[dict] | None, str]:
    path = "metrics/evaluate.json"
    if inputs.previous is None:
        return None, (f"No previous metrics: {path} is not committed at git's HEAD (or this is "
                      "not a git repository), so there is nothing to compare with.")
    rows = metric_changes(inputs.previous, inputs.metrics)
    if not rows:
        return rows, f"No metric changed against {path} at HEAD."
    return rows, (f"Metrics that differ from {path} at HEAD, as `dvc metrics diff HEAD` shows "
                  "them (change = workspace − HEAD).")


def build_report(inputs: ReportInputs, params: ReportParams, seed: int) -> Report:
    """The HTML and Markdown documents and the headline rows."""
    rows = headline(inputs)
    sentences = statistics_in_words(inputs)
    figures = _figures(inputs, params, seed)
    change_rows, change_text = _changes(inputs)
    details, classes = inputs.details, inputs.details["classes"]
    meta = (f"{details['test_images']:,} test images, {len(classes)} classes; horizontal-flip "
            f"test-time augmentation {'on' if details['tta_flip'] else 'off'}; data: "
            f"{inputs.source.get('source', '?')}. Generated by <code>{COMMAND}</code> (stage "
            "<code>report</code> of <code>dvc repro</code>) from metrics/evaluate.json, "
            "eval/details.json, eval/predictions/ and models/*/fold_*/.")
    note = jpeg_note(inputs.source)

    def figures_html(section: str) -> str:
        return "".join(f'<h3>{html.escape(f.title)}</h3><figure><img alt="{html.escape(f.title)}" '
                       f'src="data:image/png;base64,{f.png}"><figcaption>{html.escape(f.caption)}'
                       "</figcaption></figure>" for f in figures if f.section == section)

    confusion = "".join(
        f'<h3>{display_name(m)}</h3><div class="pair">'
        + "".join(f'<figure><img alt="{html.escape(f.title)}" src="data:image/png;base64,{f.png}">'
                  f"<figcaption>{html.escape(f.caption)}</figcaption></figure>"
                  for f in figures if f.section == "confusion" and f.model == m)
        + _table_html(class_report_rows(details["models"][m]["ensemble"]["report"], classes))
        + "</div>" for m in inputs.models)
    body = {
        "headline": _table_html(rows, "headline") + f'<p class="note">{HEADLINE_NOTE}'
                    + (f" {html.escape(note)}" if note else "") + "</p>"
                    + _table_html(fold_rows(inputs), "folds"),
        "tests": "".join(f"<p>{html.escape(s)}</p>" for s in sentences),
        "learning-curves": figures_html("learning-curves"),
        "confusion": confusion,
        "samples": figures_html("samples"),
        "mistakes": figures_html("mistakes") or "<p>No mistakes to show.</p>",
        "changes": f"<p>{html.escape(change_text)}</p>" + _table_html(change_rows or []),
    }
    sections = "".join(f'<section id="{key}"><h2>{title}</h2>{body[key]}</section>'
                       for key, title in SECTIONS.items())
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>CIFAR-10: CNN vs ANN — evaluation report</title><style>{_STYLE}</style>"
            f'</head><body><h1>CIFAR-10: CNN vs ANN — evaluation report</h1><p class="meta">{meta}'
            f"</p>{sections}<script>{_IMAGE_CHECK}</script></body></html>\n")

    md = [f"# CIFAR-10: CNN vs ANN — evaluation report\n\n{_strip_tags(meta)} Figures (learning "
          "curves, confusion matrices, sample predictions, most confident mistakes): report.html."
          "\n",
          f"## {SECTIONS['headline']}\n\n{_table_md(rows)}\n\n{HEADLINE_NOTE} {note}\n\n"
          f"{_table_md(fold_rows(inputs))}\n",
          f"## {SECTIONS['tests']}\n\n" + "\n\n".join(sentences) + "\n"]
    md.append(f"## {SECTIONS['confusion']}\n\nPer-class scores of each fold ensemble on the "
              "test set (confusion matrices: report.html).\n")
    md += [f"### {display_name(m)}\n\n"
           f"{_table_md(class_report_rows(details['models'][m]['ensemble']['report'], classes))}\n"
           for m in inputs.models]
    md.append(f"## {SECTIONS['changes']}\n\n{change_text}\n\n{_table_md(change_rows or [])}\n")
    return Report(html=page, markdown="\n".join(md).rstrip() + "\n", headline=rows)


def _strip_tags(text: str) -> str:
    return text.replace("<code>", "`").replace("</code>", "`")


def write_report(report: Report, paths: Paths) -> Path:
    """Write report.html and report.md atomically; return the HTML's path."""
    write_atomic(paths.report_md, lambda p: p.write_text(report.markdown))
    return write_atomic(paths.report_html, lambda p: p.write_text(report.html))
