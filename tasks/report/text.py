"""Numbers, sentences and tables of the report: pure functions of its inputs, no formatting."""

from __future__ import annotations

import numpy as np
import pandas as pd

from tasks.report.inputs import ReportInputs

HEADLINE_NOTE = ("Test accuracy: mean ± standard deviation over the folds' models on the test set, "
                 "of each image alone (one view, as the study measured) and, where flip TTA is on, "
                 "averaged with its mirror image; ensemble: the mean of the folds' softmax outputs; "
                 "training time: all folds, "
                 "validation excluded; early stops: folds stopped before the epoch limit because "
                 "the validation loss no longer improved.")


def display_name(model: str) -> str:
    return {"ann": "ANN", "cnn": "CNN"}.get(model, model)


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def p_value(value: float | None) -> str:
    if value is None:
        return "p = n/a"
    return "p < 0.0001" if value < 1e-4 else f"p = {value:.2g}"


def duration(seconds: float) -> str:
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


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def answer(inputs: ReportInputs) -> list[str]:
    """The report's first words: each model's accuracy and each gap, with its interval and tests."""
    tta = inputs.details["tta_flip"]
    out = []
    for model in inputs.models:
        m, folds = inputs.metrics[model], inputs.training[model]
        single = ", ".join(pct(m["folds"][f"fold_{f['fold']}"]["test_acc_no_tta"]) for f in folds)
        with_tta = (f"; with flip TTA {pct(m['test_acc_mean'])} per fold and {pct(m['ensemble_acc'])} "
                    "for the ensemble") if tta else ""
        devices = ", ".join(sorted({f["device"].upper() for f in folds}))
        out.append(f"**{display_name(model)}**: {pct(m['test_acc_no_tta_mean'])} mean test accuracy of "
                   f"its {len(folds)} fold models ({single}), {pct(m['ensemble_acc_no_tta'])} for their "
                   f"ensemble{with_tta}; trained in {duration(sum(f['train_seconds'] for f in folds))} "
                   f"on {devices}.")
    for pair in inputs.details["comparisons"].values():
        a, b, t = display_name(pair["model"]), display_name(pair["baseline"]), pair["t_test"]
        level = f"{100 * pair['confidence']:.0f} %"
        view = "with flip TTA" if tta else "one view"
        if t["t_pvalue"] is None:
            per_fold = f"{points(t['mean_diff'])} points per fold (no t-test: {t['note']})"
        else:
            per_fold = (f"{points(t['mean_diff'])} points per fold ({level} CI {points(t['ci_low'])} to "
                        f"{points(t['ci_high'])}, paired t-test {p_value(t['t_pvalue'])})")
        out.append(f"**The gap, {a} − {b}** ({view}): {per_fold}; {points(pair['ensemble_diff'])} points "
                   f"between the ensembles ({level} CI {points(pair['ensemble_ci_low'])} to "
                   f"{points(pair['ensemble_ci_high'])}, McNemar {p_value(pair['mcnemar']['pvalue'])}).")
    return out


def headline(inputs: ReportInputs) -> list[dict]:
    """The comparison table: one row per model, formatted for reading."""
    tta = inputs.details["tta_flip"]
    rows = []
    for model in inputs.models:
        m, folds = inputs.metrics[model], inputs.training[model]
        early = sum(f["stopped"] != "max epochs" for f in folds)
        single = [m["folds"][f"fold_{f['fold']}"]["test_acc_no_tta"] for f in folds]
        row = {
            "model": display_name(model),
            "test accuracy, one view (mean ± std)": f"{100 * np.mean(single):.2f} ± "
                                                    f"{100 * (np.std(single, ddof=1) if len(single) > 1 else 0):.2f} %",
            "ensemble, one view": pct(m["ensemble_acc_no_tta"]),
        }
        if tta:
            row["test accuracy, flip TTA (mean ± std)"] = (f"{100 * m['test_acc_mean']:.2f} ± "
                                                           f"{100 * m['test_acc_std']:.2f} %")
            row["ensemble, flip TTA"] = pct(m["ensemble_acc"])
        rows.append({**row,
            "parameters": f"{folds[0]['parameters']:,}",
            "training time": duration(sum(f["train_seconds"] for f in folds)),
            "epochs run per fold": ", ".join(str(f["epochs"]) for f in folds),
            "early stops": f"{early} of {len(folds)}",
        })
    return rows


def fold_table(inputs: ReportInputs) -> pd.DataFrame:
    """Test accuracy, loss and ECE of every fold's model, next to its validation accuracy."""
    tta = inputs.details["tta_flip"]
    rows = []
    for model in inputs.models:
        for train in inputs.training[model]:
            fold = inputs.metrics[model]["folds"][f"fold_{train['fold']}"]
            rows.append({"model": display_name(model), "fold": train["fold"],
                         "validation accuracy": pct(train["val_acc"]),
                         "test accuracy, one view": pct(fold["test_acc_no_tta"]),
                         **({"test accuracy, flip TTA": pct(fold["test_acc"])} if tta else {}),
                         "test loss": f"{fold['test_loss']:.4f}",
                         "ECE": f"{fold['ece']:.4f}", "best epoch": train["best_epoch"],
                         "stopped": train["stopped"], "training time": duration(train["train_seconds"])})
    return pd.DataFrame(rows)


def class_table(report: dict, classes: list[str]) -> pd.DataFrame:
    """scikit-learn's classification report (a dict) as a table."""
    return pd.DataFrame([
        {"class": name, "precision": f"{report[name]['precision']:.3f}", "recall": f"{report[name]['recall']:.3f}",
         "F1": f"{report[name]['f1-score']:.3f}", "support": f"{int(report[name]['support']):,}"}
        for name in [*classes, "macro avg", "weighted avg"]])


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
            test = (f"{100 * pair['confidence']:.0f} % confidence interval {points(t['ci_low'])} to "
                    f"{points(t['ci_high'])} points; paired t-test on the per-fold accuracies: "
                    f"t = {t['t_statistic']:.2f}, {p_value(t['t_pvalue'])}, {verdict} at the 5 % level")
        acc = {k: inputs.metrics[pair[k]]["ensemble_acc"] for k in ("model", "baseline")}
        verdict = "significant" if mc["pvalue"] < 0.05 else "not significant"
        out.append(
            f"Over {t['folds']} folds, {verb} on average ({test}). "
            f"The fold ensembles ({a} {pct(acc['model'])}, {b} {pct(acc['baseline'])}) disagree "
            f"on {mc['only_a'] + mc['only_b']:,} test images: only the {a} is right on "
            f"{mc['only_a']:,}, only the {b} on {mc['only_b']:,}: a gap of {points(pair['ensemble_diff'])} "
            f"points ({100 * pair['confidence']:.0f} % confidence interval {points(pair['ensemble_ci_low'])} to "
            f"{points(pair['ensemble_ci_high'])}; McNemar's test, {mc['method']}: "
            f"{p_value(mc['pvalue'])}, {verdict} at the 5 % level).")
    bins = inputs.details["calibration_bins"]
    eces = ", ".join(f"{display_name(m)} {inputs.metrics[m]['ece']:.3f}" for m in inputs.models)
    out.append(f"Expected calibration error of the ensembles ({bins} equal-width confidence bins; "
               f"0 = the confidence matches the accuracy): {eces}.")
    return out


def changes_in_words(changes: pd.DataFrame | None, metrics: str) -> str:
    if changes is None:
        return (f"No previous metrics: {metrics} is not committed at git's HEAD (or this is not a "
                "DVC repository), so there is nothing to compare with.")
    if changes.empty:
        return f"No metric changed against {metrics} at HEAD."
    return (f"Metrics that differ from {metrics} at HEAD, from `dvc metrics diff HEAD` "
            "(change = workspace − HEAD).")


def sample_ids(ids: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` test ids drawn with `seed`: the same images for every model and on every run."""
    return np.random.default_rng(seed).choice(ids, min(count, len(ids)), replace=False)
