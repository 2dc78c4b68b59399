"""Tiny stand-ins for what the train stage leaves behind, for the evaluate and report tests.

Fresh (untrained) networks on 8x8 images: building and scoring them takes well under a second,
and their predictions differ between folds, so every statistic has something to chew on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from tasks import evaluate
from tasks.config import EvaluateParams, ReportParams
from tasks.models import build_model
from tasks.paths import Paths
from tasks.tables import read_test
from tests.conftest import class_images, write_prepared_split

CLASSES = ["red", "green", "blue", "grey"]
SIZE = 8  # the CNNs' three 2x2 max-pools need a multiple of 8
JPEG_SOURCE = {"source": "../shared/datasets/cifar-10-jpeg.tar.gz", "file": "cifar-10-jpeg.tar.gz",
               "sha256": "0" * 64, "layout": "image-folder", "prefix": "cifar-10-jpeg"}
EVALUATE = EvaluateParams(tta_flip=True, batch_size=16, calibration_bins=15, device="cpu")
REPORT = ReportParams(sample_images=12, mistakes=6)


def write_fold(models_dir: Path, model: str, fold: int, epochs: int = 3, seed: int = 0,
               classes: list[str] = CLASSES) -> Path:
    """models/<model>/fold_<k>/: weights.pt, metrics.json and history.csv, as train writes them."""
    torch.manual_seed(seed * 100 + fold)
    network = build_model(model, len(classes), SIZE, "relu")
    config = {"model": model, "classes": classes, "image_size": SIZE, "activation": "relu",
              "mean": [0.5, 0.45, 0.4], "std": [0.25, 0.25, 0.26]}
    out = models_dir / model / f"fold_{fold}"
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": network.state_dict(), "config": config}, out / "weights.pt")
    history = pd.DataFrame({
        "epoch": range(1, epochs + 1),
        "train/loss": [1.4 - 0.1 * e for e in range(epochs)],
        "train/acc": [0.3 + 0.05 * e for e in range(epochs)],
        "val/loss": [1.3 - 0.08 * e - 0.01 * fold for e in range(epochs)],
        "val/acc": [0.35 + 0.04 * e + 0.01 * fold for e in range(epochs)],
        "lr": [0.1] * epochs, "seconds": [1.5] * epochs, "images_per_s": [100.0] * epochs,
    })
    history.to_csv(out / "history.csv", index=False)
    best = history.iloc[-1]
    (out / "metrics.json").write_text(json.dumps({
        "model": model, "fold": fold, "best_epoch": epochs, "epochs": epochs,
        "stopped": "max epochs" if fold else "no validation-loss improvement for 5 epochs",
        "val_loss": float(best["val/loss"]), "val_acc": float(best["val/acc"]),
        "train_acc": float(best["train/acc"]), "train_seconds": 4.5, "images_per_s": 100.0,
        "parameters": sum(p.numel() for p in network.parameters()), "device": "cpu",
        "checkpoint": "0" * 16,
    }))
    return out


def write_pipeline_inputs(root: Path, models=("ann", "cnn"), folds: int = 2) -> None:
    """Everything the evaluate and report stages read, under `root` (same layout as the repo)."""
    pixels, labels = class_images(len(CLASSES), 10, size=SIZE, seed=3)
    write_prepared_split(root / "data/prepared/test.parquet", CLASSES, pixels, labels)
    (root / "data/raw").mkdir(parents=True, exist_ok=True)
    (root / "data/raw/source.json").write_text(json.dumps(JPEG_SOURCE))
    for model in models:
        for fold in range(folds):
            write_fold(root / "models", model, fold)


def run_evaluation(root: Path, models=("ann", "cnn")) -> dict:
    """The evaluate stage's steps, in process, on the files under `root`; the metrics."""
    paths = Paths(root)
    test = read_test(paths.prepared_test)
    results = [evaluate.evaluate_model(m, paths, test, EVALUATE) for m in models]
    return evaluate.write_outputs(results, evaluate.compare(results, test.labels), test, EVALUATE,
                                  paths)


def evaluated_report_inputs(root: Path, models=("ann", "cnn")):
    """The report's inputs, read from a tiny evaluated pipeline under `root`."""
    from tasks import report  # the report's modules: only its tests need them

    write_pipeline_inputs(root, models)
    run_evaluation(root, models)
    return report.load_inputs(tuple(models), Paths(root))
