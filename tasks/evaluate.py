"""Score every trained (model, fold) on the untouched test set, ensemble the folds, compare models.

Per fold: accuracy, loss, expected calibration error, scikit-learn's classification report and the
confusion matrix, with flip TTA when `evaluate.tta_flip` is on, plus the accuracy of the image
alone (what the study measured: it had no TTA). Per model: mean ± std over folds and the fold
ensemble (mean of the folds' softmax outputs). Between models: a paired t-test on the per-fold
accuracies and McNemar's test on the ensembles' predictions, each gap with its 95 % confidence
interval. Steps: `tables.read_test` -> `evaluate_model` (one per model) ->
`compare` -> `write_outputs` (wired in flows/evaluate.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import classification_report, confusion_matrix
from torch import nn

from tasks.config import EvaluateParams
from tasks.io import atomic_path, write_csv, write_json, write_parquet
from tasks.models import build_model
from tasks.paths import Paths
from tasks.tables import TestSet
from tasks.train import pick_device, to_input

CONFIDENCE = 0.95  # level of the confidence intervals on the gaps between models
# McNemar: below this many discordant pairs the chi-square approximation is poor, so the exact
# binomial test is used instead (the usual rule of thumb).
EXACT_BELOW = 25


@dataclass
class ModelResult:
    model: str
    folds: dict[str, dict]  # "fold_<k>" -> score()
    ensemble: dict  # score() of the mean of the folds' softmax outputs
    probabilities: np.ndarray  # (N, classes) the ensemble's softmax outputs


# ----------------------------------------------------------------------------- inputs

def load_model(weights: Path) -> tuple[nn.Module, dict]:
    """A trained fold's network in eval mode, and the config it was trained with."""
    saved = torch.load(weights, map_location="cpu", weights_only=True)
    config = saved["config"]
    model = build_model(config["model"], len(config["classes"]), config["image_size"],
                        config["activation"])
    model.load_state_dict(saved["state_dict"])
    return model.eval(), config


# ----------------------------------------------------------------------------- metrics

@torch.no_grad()
def predict_views(model: nn.Module, config: dict, pixels: np.ndarray, params: EvaluateParams,
                  device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs (N, classes) of the image alone, and the ones that count: with
    `tta_flip`, averaged with the mirrored image's (without it, the same array twice)."""
    model = model.to(device, memory_format=torch.channels_last).eval()
    mean = torch.tensor(config["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(config["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
    single = np.empty((len(pixels), len(config["classes"])), np.float32)
    counted = np.empty_like(single) if params.tta_flip else single
    for start in range(0, len(pixels), params.batch_size):
        batch = torch.from_numpy(pixels[start:start + params.batch_size]).to(device)
        x = to_input(batch.permute(0, 3, 1, 2), mean, std)  # training's scaling, in fp32
        probs = model(x).float().softmax(1)
        single[start:start + len(batch)] = probs.cpu().numpy()
        if params.tta_flip:
            probs = (probs + model(x.flip(3)).float().softmax(1)) / 2
            counted[start:start + len(batch)] = probs.cpu().numpy()
    return single, counted


def predict(model: nn.Module, config: dict, pixels: np.ndarray, params: EvaluateParams,
            device: torch.device) -> np.ndarray:
    """Softmax outputs (N, classes); with `tta_flip`, averaged with the mirrored image's."""
    return predict_views(model, config, pixels, params, device)[1]


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence| x share of images.

    Bins are right-closed, (i/bins, (i+1)/bins], as in Guo et al. (2017), "On calibration of
    modern neural networks"; the confidence is the top softmax output.
    """
    confidence = probs.max(1)
    correct = probs.argmax(1) == labels
    which = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float((probs.argmax(1) == labels).mean())


def score(probs: np.ndarray, labels: np.ndarray, classes: list[str], bins: int) -> dict:
    """Accuracy, loss (mean negative log-likelihood), ECE, classification report, confusion."""
    predicted = probs.argmax(1)
    every = list(range(len(classes)))  # name every class even when one is never predicted
    # Clipped: an averaged softmax can round to 0 in float32 and log(0) is infinite.
    true_prob = np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)
    return {
        "accuracy": accuracy(probs, labels),
        "loss": float(-np.log(true_prob).mean()),
        "ece": expected_calibration_error(probs, labels, bins),
        "report": classification_report(labels, predicted, labels=every, target_names=classes,
                                        output_dict=True, zero_division=0),
        "confusion": confusion_matrix(labels, predicted, labels=every).tolist(),
    }


def evaluate_model(model: str, paths: Paths, test: TestSet, params: EvaluateParams) -> ModelResult:
    """Score each of the model's folds and their ensemble on the test set."""
    device = pick_device(params.device)
    folds, total, total_single = {}, None, None
    for directory in paths.trained_folds(model):
        network, config = load_model(directory / "weights.pt")
        if config["classes"] != test.classes or config["image_size"] != test.pixels.shape[1]:
            raise ValueError(f"{directory}: trained on classes {config['classes']} at "
                             f"{config['image_size']} px, but the test set has {test.classes} at "
                             f"{test.pixels.shape[1]} px; re-run the train stage")
        single, probs = predict_views(network, config, test.pixels, params, device)
        fold = folds[directory.name] = score(probs, test.labels, test.classes, params.calibration_bins)
        fold["accuracy_no_tta"] = accuracy(single, test.labels)
        total = probs.astype(np.float64) if total is None else total + probs
        total_single = single.astype(np.float64) if total_single is None else total_single + single
        print(f"{model} {directory.name}: test acc {fold['accuracy']:.4f} "
              f"({fold['accuracy_no_tta']:.4f} without TTA), loss {fold['loss']:.4f}")
    probabilities = (total / len(folds)).astype(np.float32)
    ensemble = score(probabilities, test.labels, test.classes, params.calibration_bins)
    ensemble["accuracy_no_tta"] = accuracy(total_single, test.labels)
    print(f"{model} ensemble of {len(folds)} folds: test acc {ensemble['accuracy']:.4f} "
          f"({ensemble['accuracy_no_tta']:.4f} without TTA), ECE {ensemble['ece']:.4f}")
    return ModelResult(model, folds, ensemble, probabilities)


# ----------------------------------------------------------------------------- statistics

def paired_t_test(a: list[float], b: list[float]) -> dict:
    """Paired t-test of per-fold accuracies a vs b (scipy.stats.ttest_rel), never raising, with
    the `CONFIDENCE` interval of the mean difference (mean ± t quantile × standard error).

    Undefined with fewer than 2 folds or when the difference is the same in every fold (zero
    variance): then t, p and the interval are None and `note` says why.
    """
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    out = {"folds": len(diff), "mean_diff": float(diff.mean()) if len(diff) else None,
           "t_statistic": None, "t_pvalue": None, "ci_low": None, "ci_high": None, "note": None}
    if len(diff) < 2:
        out["note"] = f"needs at least 2 folds, got {len(diff)}"
    elif np.ptp(diff) < 1e-12:  # equal up to rounding: 0.9 - 0.8 != 0.8 - 0.7 in floats
        out["note"] = "the difference is the same in every fold (zero variance): t is undefined"
    else:
        result = stats.ttest_rel(a, b)
        interval = result.confidence_interval(CONFIDENCE)
        out.update(t_statistic=float(result.statistic), t_pvalue=float(result.pvalue),
                   ci_low=float(interval.low), ci_high=float(interval.high))
    return out


def paired_accuracy_gap(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Accuracy of a minus accuracy of b on the same images, with its `CONFIDENCE` interval.

    The Wald interval for a difference of paired proportions (Agresti, "Categorical Data
    Analysis", 10.1): with n images, b = only a right and c = only b right, the gap is (b - c) / n
    and its standard error sqrt(b + c - (b - c)^2 / n) / n. Only the discordant images add to the
    uncertainty, which is why it is far narrower than two separate accuracy intervals.
    """
    n = len(correct_a)
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    gap = (only_a - only_b) / n
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / n, 0.0)) / n
    z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return {"diff": gap, "ci_low": gap - z * se, "ci_high": gap + z * se}


def mcnemar_test(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's test on paired right/wrong outcomes of two classifiers on the same images.

    Only the discordant pairs count: `only_a` (a right, b wrong) and `only_b`. With fewer than
    `EXACT_BELOW` of them the exact two-sided binomial test (scipy.stats.binomtest, p = 0.5) is
    used, otherwise the chi-square statistic with Edwards' continuity correction,
    (|only_a - only_b| - 1)^2 / (only_a + only_b), on 1 degree of freedom.
    """
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    n = only_a + only_b
    if n == 0:
        return {"only_a": 0, "only_b": 0, "statistic": None, "pvalue": 1.0,
                "method": "no discordant pairs: the two models agree on every image"}
    if n < EXACT_BELOW:
        return {"only_a": only_a, "only_b": only_b, "statistic": None,
                "pvalue": float(stats.binomtest(only_a, n, 0.5).pvalue),
                "method": f"exact binomial test ({n} discordant pairs < {EXACT_BELOW})"}
    statistic = (abs(only_a - only_b) - 1) ** 2 / n
    return {"only_a": only_a, "only_b": only_b, "statistic": float(statistic),
            "pvalue": float(stats.chi2.sf(statistic, 1)),
            "method": "chi-square with continuity correction"}


def baseline_of(models: list[str]) -> str:
    """What every other model is compared with: the ANN when it was trained, else the first."""
    return "ann" if "ann" in models else models[0]


def compare(results: list[ModelResult], labels: np.ndarray) -> dict[str, dict]:
    """Each model against the baseline: per-fold paired t-test and McNemar on the ensembles."""
    by_name = {r.model: r for r in results}
    base = by_name[baseline_of(list(by_name))]
    comparisons = {}
    for result in results:
        if result is base:
            continue
        common = [f for f in result.folds if f in base.folds]  # pair fold k with fold k
        t_test = paired_t_test([result.folds[f]["accuracy"] for f in common],
                               [base.folds[f]["accuracy"] for f in common])
        right, base_right = result.probabilities.argmax(1) == labels, base.probabilities.argmax(1) == labels
        gap = paired_accuracy_gap(right, base_right)
        comparisons[f"{result.model}_vs_{base.model}"] = {
            "model": result.model, "baseline": base.model, "t_test": t_test,
            "mcnemar": mcnemar_test(right, base_right), "confidence": CONFIDENCE,
            "ensemble_diff": gap["diff"], "ensemble_ci_low": gap["ci_low"],
            "ensemble_ci_high": gap["ci_high"],
        }
    return comparisons


# ----------------------------------------------------------------------------- outputs

def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _pvalue(value: float | None) -> float | None:
    # Significant digits, not decimals: a p-value of 1e-30 must not print as 0.
    return None if value is None else float(f"{value:.4g}")


def metrics_summary(results: list[ModelResult], comparisons: dict[str, dict]) -> dict:
    """The DVC metrics file: numbers only, stable keys, so `dvc metrics diff` reads well."""
    summary: dict[str, dict] = {}
    for r in results:
        accs = [f["accuracy"] for f in r.folds.values()]
        single = [f["accuracy_no_tta"] for f in r.folds.values()]
        summary[r.model] = {
            "test_acc_mean": _round(float(np.mean(accs))),
            "test_acc_std": _round(float(np.std(accs, ddof=1))) if len(accs) > 1 else 0.0,
            "test_acc_no_tta_mean": _round(float(np.mean(single))),
            "test_loss_mean": _round(float(np.mean([f["loss"] for f in r.folds.values()]))),
            "ensemble_acc": _round(r.ensemble["accuracy"]),
            "ensemble_acc_no_tta": _round(r.ensemble["accuracy_no_tta"]),
            "ensemble_loss": _round(r.ensemble["loss"]),
            "ensemble_macro_f1": _round(r.ensemble["report"]["macro avg"]["f1-score"]),
            "ece": _round(r.ensemble["ece"]),
            "folds": {name: {"test_acc": _round(f["accuracy"]),
                             "test_acc_no_tta": _round(f["accuracy_no_tta"]),
                             "test_loss": _round(f["loss"]), "ece": _round(f["ece"])}
                      for name, f in r.folds.items()},
        }
    summary["comparison"] = {
        key: {
            "mean_diff": _round(c["t_test"]["mean_diff"]),
            "mean_diff_ci_low": _round(c["t_test"]["ci_low"]),
            "mean_diff_ci_high": _round(c["t_test"]["ci_high"]),
            "t_statistic": _round(c["t_test"]["t_statistic"], 3),
            "t_pvalue": _pvalue(c["t_test"]["t_pvalue"]),
            "ensemble_diff": _round(c["ensemble_diff"]),
            "ensemble_diff_ci_low": _round(c["ensemble_ci_low"]),
            "ensemble_diff_ci_high": _round(c["ensemble_ci_high"]),
            "mcnemar_statistic": _round(c["mcnemar"]["statistic"], 3),
            "mcnemar_pvalue": _pvalue(c["mcnemar"]["pvalue"]),
            f"{c['model']}_only_right": c["mcnemar"]["only_a"],
            f"{c['baseline']}_only_right": c["mcnemar"]["only_b"],
        }
        for key, c in comparisons.items()
    }
    return summary


def predictions_table(test: TestSet, probabilities: np.ndarray) -> pd.DataFrame:
    """id, true and predicted class, confidence, and the softmax outputs in class order."""
    return pd.DataFrame({
        "id": test.ids,
        "true": pd.Categorical.from_codes(test.labels, test.classes),
        "predicted": pd.Categorical.from_codes(probabilities.argmax(1), test.classes),
        "confidence": probabilities.max(1),
        "probabilities": list(probabilities),
    })


def write_outputs(results: list[ModelResult], comparisons: dict[str, dict], test: TestSet,
                  params: EvaluateParams, paths: Paths) -> dict:
    """Predictions (Parquet), DVC plot tables, the details file and the metrics; the metrics."""
    with atomic_path(paths.predictions, directory=True) as tmp:
        for r in results:
            write_parquet(tmp / f"{r.model}.parquet", predictions_table(test, r.probabilities))
    with atomic_path(paths.eval_plots, directory=True) as tmp:
        for r in results:
            # DVC's `confusion` template counts (actual, predicted) pairs itself.
            predicted = np.asarray(test.classes)[r.probabilities.argmax(1)]
            write_csv(tmp / paths.confusion_tables.name / f"{r.model}.csv",
                      pd.DataFrame({"actual": np.asarray(test.classes)[test.labels],
                                    "predicted": predicted}))
            report = r.ensemble["report"]
            write_csv(tmp / paths.class_f1_tables.name / f"{r.model}.csv", pd.DataFrame({
                "class": test.classes,
                "f1": [round(report[c]["f1-score"], 4) for c in test.classes],
                "precision": [round(report[c]["precision"], 4) for c in test.classes],
                "recall": [round(report[c]["recall"], 4) for c in test.classes],
            }))
    write_json(paths.eval_details, {
        "test_images": len(test.labels), "classes": test.classes, "tta_flip": params.tta_flip,
        "calibration_bins": params.calibration_bins,
        "models": {r.model: {"folds": r.folds, "ensemble": r.ensemble} for r in results},
        "comparisons": comparisons,
    })
    summary = metrics_summary(results, comparisons)
    write_json(paths.eval_metrics, summary)
    return summary
