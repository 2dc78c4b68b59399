"""One training loop for every model: train one (model, fold) pair with early stopping,
per-epoch checkpoints (resumed after a crash), DVCLive logs and a small metrics file.

The whole uint8 training set lives on the training device as one tensor; a batch is an index
into it, augmented there with per-image random draws (tasks/augment.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import socket
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from tasks.augment import augment
from tasks.checkpoints import Checkpoint
from tasks.config import AugmentParams, TrainParams
from tasks.io import atomic_path, write_csv, write_json
from tasks.models import build_model, count_parameters, l2_penalty
from tasks.paths import Paths, project_dir
from tasks.sources import source_digest
from tasks.tables import read_prepared


class TrainingDiverged(RuntimeError):
    """The training or validation loss became NaN or infinite (not worth a retry)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device = 'cuda' but no CUDA device is available")
    return torch.device(name)


def fold_seed(seed: int, model: str, fold: int) -> int:
    """A stable seed per (model, fold), independent of the order folds happen to run in."""
    return zlib.crc32(f"{seed}/{model}/{fold}".encode())


# ----------------------------------------------------------------------------- data

@dataclass(frozen=True)
class TrainingSet:
    """The prepared training images, read once by the stage and sent with every task, so that a
    worker needs nothing from the stage's disk."""
    pixels: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64
    classes: list[str]
    digest: str  # of the prepared file: part of every checkpoint key


@dataclass(frozen=True)
class FoldSplit:
    """One fold's rows of the split stage's tables: which ids it trains and validates on."""
    fold: int
    train_ids: np.ndarray  # oversampled ids repeat
    val_ids: np.ndarray
    loss_weights: np.ndarray  # per class, in the training set's class order


def read_training_set(paths: Paths) -> TrainingSet:
    pixels, labels, classes = read_prepared(paths.prepared_train)
    with open(paths.prepared_train, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return TrainingSet(pixels, labels, classes, digest)


def fold_count(paths: Paths) -> int:
    return int(pd.read_parquet(paths.folds, columns=["fold"])["fold"].max()) + 1


def read_fold_split(paths: Paths, fold: int, classes: list[str]) -> FoldSplit:
    """Fold `fold`'s split from data/splits."""
    folds = pd.read_parquet(paths.folds)
    index = pd.read_parquet(paths.train_index)
    counts = pd.read_csv(paths.class_counts)
    train_ids = index.loc[index["fold"] == fold, "id"].to_numpy(np.int64)
    val_ids = folds.loc[folds["fold"] == fold, "id"].to_numpy(np.int64)
    if not len(train_ids) or not len(val_ids):
        raise ValueError(f"{paths.splits}: fold {fold} has no training or no validation images")
    weights = counts.loc[counts["fold"] == fold].sort_values("class", key=lambda s: s.map(classes.index))
    return FoldSplit(fold, train_ids, val_ids, weights["loss_weight"].to_numpy(np.float32))


@dataclass
class FoldData:
    images: torch.Tensor  # (N, 3, S, S) uint8, every training image, on the device
    labels: torch.Tensor  # (N,) int64
    train_index: torch.Tensor  # ids this fold trains on (oversampled ids repeat)
    val_index: torch.Tensor  # ids of the held-out fold
    class_weights: torch.Tensor  # per-class loss weights (all 1 unless class_weight balancing)
    classes: list[str]
    mean: torch.Tensor  # (1, 3, 1, 1) input scaling, from the training fold
    std: torch.Tensor


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    # Arrays that arrived with a task can be read-only (unpickled from a buffer): torch wants its own.
    return torch.from_numpy(array if array.flags.writeable else array.copy()).to(device)


def load_fold(data: TrainingSet, split: FoldSplit, scaling: str, device: torch.device) -> FoldData:
    """The fold's tensors on the training device, and its input scaling."""
    if scaling == "standardize":
        sample = data.pixels[np.unique(split.train_ids)].reshape(-1, 3).astype(np.float64) / 255
        mean, std = sample.mean(0), sample.std(0)
    else:  # divide255: the study's plain scaling to [0, 1]
        mean, std = np.zeros(3), np.ones(3)
    as_param = lambda v: torch.tensor(v, dtype=torch.float32, device=device).view(1, 3, 1, 1)  # noqa: E731
    # permute() of NHWC is NCHW in channels_last memory order: what convolutions prefer.
    return FoldData(
        images=_tensor(data.pixels, device).permute(0, 3, 1, 2),
        labels=_tensor(data.labels, device),
        train_index=_tensor(split.train_ids, device),
        val_index=_tensor(split.val_ids, device),
        class_weights=_tensor(split.loss_weights.astype(np.float32), device),
        classes=data.classes,
        mean=as_param(mean),
        std=as_param(std),
    )


def to_input(batch_u8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
             aug: AugmentParams | None = None, generator=None) -> torch.Tensor:
    """uint8 NCHW batch -> augmented (when `aug` is given), scaled float batch in channels_last.
    Evaluation calls it too, with the mean and std the model was trained with."""
    x = batch_u8.float().div_(255)
    if aug is not None:
        x = augment(x, aug, generator)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- optimisation

def make_optimizer(model: nn.Module, p: TrainParams) -> torch.optim.Optimizer:
    if p.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=p.momentum > 0,
                           weight_decay=p.weight_decay)


def make_scheduler(optimizer, p: TrainParams, steps_per_epoch: int):
    """The lr schedule, and whether it steps per batch (True) or per epoch on val loss (False)."""
    total = p.epochs * steps_per_epoch
    if p.schedule == "one_cycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=p.lr, total_steps=total), True
    if p.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total, eta_min=p.min_lr), True
    if p.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=p.plateau_factor, patience=p.plateau_patience, min_lr=p.min_lr), False
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), True


def _autocast(device: torch.device):
    # bf16 on the GPU (no loss scaling needed); plain fp32 on the CPU, where bf16 is slower.
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def train_one_epoch(model, data: FoldData, optimizer, scheduler, per_batch: bool, p: TrainParams,
                    aug: AugmentParams, generator) -> tuple[float, float]:
    """One pass over the fold's training ids in random order: (mean loss, accuracy)."""
    model.train()
    order = data.train_index[torch.randperm(len(data.train_index), generator=generator,
                                            device=generator.device)]
    total_loss = torch.zeros((), device=data.labels.device)
    correct = torch.zeros((), dtype=torch.long, device=data.labels.device)
    for start in range(0, len(order), p.batch_size):
        ids = order[start:start + p.batch_size]
        x, y = to_input(data.images[ids], data.mean, data.std, aug, generator), data.labels[ids]
        with _autocast(data.images.device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, weight=data.class_weights,
                                   label_smoothing=p.label_smoothing)
        objective = loss + l2_penalty(model, p.l2) if p.l2 else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        if per_batch:
            scheduler.step()
        total_loss += loss.detach() * len(ids)
        correct += (logits.argmax(1) == y).sum()
    n = len(order)
    return total_loss.item() / n, correct.item() / n


@torch.no_grad()
def evaluate(model, data: FoldData, ids: torch.Tensor, batch_size: int) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on `ids`, without augmentation."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        with _autocast(data.images.device):
            logits = model(to_input(data.images[batch], data.mean, data.std)).float()
        y = data.labels[batch]
        total_loss += F.cross_entropy(logits, y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
    return total_loss / len(ids), correct / len(ids)


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_key(model: str, fold: int, seed: int, p: TrainParams, aug: AugmentParams,
                   data: TrainingSet, split: FoldSplit, device: torch.device) -> str:
    """Identifies everything a (model, fold) result depends on: a checkpoint is reused only
    when the key matches, so a changed parameter, data set, split, training code (every project
    file this module runs, tasks/sources.py), torch version or device never resumes a stale run."""
    h = hashlib.sha256()
    h.update(json.dumps([model, fold, seed, p.recipe(), aug.model_dump(), source_digest(__name__),
                         torch.__version__, device.type, data.digest], sort_keys=True).encode())
    for array in (split.train_ids, split.val_ids, split.loss_weights):
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:16]


def checkpoint_root(p: TrainParams, paths: Paths) -> str:
    """`train.checkpoints` as a location every worker can reach: an fsspec URL as it is, a folder
    made absolute (relative to the project), or the project's `checkpoints/` when empty."""
    if not p.checkpoints:
        return str(paths.checkpoints)
    if "://" in p.checkpoints:
        return p.checkpoints
    return str((project_dir(paths.root) / p.checkpoints).resolve())


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"augment": generator.get_state(), "cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["augment"])
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ----------------------------------------------------------------------------- one fold

def _log_epoch(live, row: dict) -> None:
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "lr"):
        live.log_metric(key, row[key])
    live.next_step()


def publish(paths: Paths, final: dict) -> dict:
    """Write a finished pair's outputs where DVC expects them (weights, history, metrics, the
    DVCLive log) from its final state; the stage does this, not the worker that trained it."""
    metrics = final["metrics"]
    model, fold = metrics["model"], metrics["fold"]
    with atomic_path(paths.fold_log_dir(model, fold), directory=True) as tmp:
        live = _dvclive(tmp)
        for row in final["history"]:
            _log_epoch(live, row)
        _end(live)  # the live log must close before the cleanup
        # Only the per-epoch tables stay: `dvc plots` reads the whole folder, and the final
        # values are in the fold's metrics.json already.
        (tmp / "metrics.json").unlink(missing_ok=True)
    with atomic_path(paths.fold_dir(model, fold), directory=True) as tmp:
        torch.save({"state_dict": final["best_state"], "config": final["config"]}, tmp / "weights.pt")
        write_csv(tmp / "history.csv", pd.DataFrame(final["history"]))
        write_json(tmp / "metrics.json", metrics)
    return metrics


DVCLIVE_SIGNAL = "DVCLIVE_STEP_COMPLETED"  # DVCLive's per-step signal file for VS Code


def _end(live) -> None:
    """`live.end()`, tolerating one race: the last thing it does is delete DVCLive's signal file
    if it exists, one file for the whole repository, so of two folds ending together one may find
    it gone between its check and its delete. Everything else `end()` does is done by then."""
    try:
        live.end()
    except FileNotFoundError as exc:
        if Path(exc.filename or "").name != DVCLIVE_SIGNAL:
            raise


def _dvclive(directory: Path):
    from dvclive import Live  # imported here: only the training process needs it

    # dvcyaml=False: parallel folds must not rewrite dvc.yaml; plots are declared there once.
    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def say(line: str) -> None:
    """print(); on a Dask worker it also reaches the stage's own output (Dask's print forwards it
    to the client), not only the worker's log. Prefect logs it either way (log_prints)."""
    if "distributed" in sys.modules:  # loaded wherever Dask runs: no import cost elsewhere
        from distributed import print as forwarded_print

        forwarded_print(line, flush=True)  # outside a worker: the built-in print
    else:
        print(line, flush=True)


def train_pair(model_name: str, split: FoldSplit, data: TrainingSet, seed: int, p: TrainParams,
               aug: AugmentParams, checkpoints: str, threads: int | None = None) -> dict:
    """Train one (model, fold) pair from what the task carries, resuming or reusing its
    checkpoint under `checkpoints` (a folder or fsspec URL); returns its final state for
    `publish`. Reads and writes nothing else, so it can run on any machine."""
    try:
        if threads:
            torch.set_num_threads(threads)
        device = pick_device(p.device)
        seed = fold_seed(seed, model_name, split.fold)
        checkpoint = Checkpoint(checkpoints, f"{model_name}/fold_{split.fold}",
                                checkpoint_key(model_name, split.fold, seed, p, aug, data, split, device))
        state = checkpoint.load()
        checkpoint.use()
        if state is not None and state.get("finished"):
            say(f"{model_name} fold {split.fold}: finished earlier (checkpoint {checkpoint.key}); "
                "restoring its outputs")
            return state
        fold = load_fold(data, split, p.input_scaling, device)
        state = fit(model_name, split.fold, seed, p, aug, fold, checkpoint, state)
        checkpoint.save(state)  # small: the optimizer state is no longer needed
        return state
    except Exception as exc:
        # Where it happened, for a stage that may see the exception from another machine.
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        exc.add_note(f"at {Path(frame.filename).name}:{frame.lineno} in {frame.name}, on {socket.gethostname()}")
        raise


def train_fold(model_name: str, fold: int, seed: int, p: TrainParams, aug: AugmentParams,
               paths: Paths, threads: int | None = None) -> dict:
    """Read, train and publish one (model, fold) pair in this process (tests, benchmarks)."""
    data = read_training_set(paths)
    split = read_fold_split(paths, fold, data.classes)
    state = train_pair(model_name, split, data, seed, p, aug, checkpoint_root(p, paths), threads)
    return publish(paths, state)


def rising_until(lrs: list[float]) -> int:
    """The last epoch (1-based) during which the learning rate rose; `lrs` holds each epoch's
    starting rate, then the rate after the last epoch. Early stopping's patience counts from
    there: while a one-cycle warm-up raises the rate, validation loss is expected to get worse,
    and stopping then ends the run before its schedule has done its work (the ANN on the default
    recipe stopped at epoch 7 of 16 at 44 % validation accuracy on one machine; on another, where
    one epoch's loss came out 1 % lower, it trained on to 57 %)."""
    return max((e for e in range(1, len(lrs)) if lrs[e] > lrs[e - 1]), default=0)


def fit(model_name: str, fold: int, seed: int, p: TrainParams, aug: AugmentParams, data: FoldData,
        checkpoint: Checkpoint, resume: dict | None, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """The epoch loop with early stopping on `data` (patience counted from the lr's peak), from the
    start or from `resume`, saving `checkpoint` after each epoch; returns the final state (best
    weights, history, metrics, config).
    `on_epoch(row)` sees each epoch's history row (the tune stage reports it to Optuna; an
    exception it raises, such as a pruned trial, ends the loop)."""
    name = f"{model_name} fold {fold}"
    device = data.images.device
    torch.manual_seed(seed)
    model = build_model(model_name, len(data.classes), data.images.shape[-1], p.activation, p.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = make_optimizer(model, p)
    steps = math.ceil(len(data.train_index) / p.batch_size)
    scheduler, per_batch = make_scheduler(optimizer, p, steps)
    generator = torch.Generator(device=device).manual_seed(seed)
    history: list[dict] = []
    best = {"val_loss": math.inf, "epoch": -1, "state": None}
    elapsed = 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        _restore_rng(resume["rng"], generator, device)
        history, best, elapsed = resume["history"], resume["best"], resume["elapsed"]
        say(f"{name}: resuming after epoch {len(history)} (checkpoint {checkpoint.key})")

    stop_reason = "max epochs"
    for epoch in range(len(history) + 1, p.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        train_loss, train_acc = train_one_epoch(model, data, optimizer, scheduler, per_batch, p, aug,
                                                generator)
        seconds = time.perf_counter() - started
        val_loss, val_acc = evaluate(model, data, data.val_index, max(p.batch_size, 512))
        for split, loss in (("training", train_loss), ("validation", val_loss)):
            # Nothing after a NaN is worth keeping, and no epoch could be chosen as the best.
            if not math.isfinite(loss):
                raise TrainingDiverged(f"{name}: {split} loss is {loss} at epoch {epoch}")
        if not per_batch:
            scheduler.step(val_loss)
        elapsed += seconds
        row = {"epoch": epoch, "train/loss": train_loss, "train/acc": train_acc, "val/loss": val_loss,
               "val/acc": val_acc, "lr": lr, "seconds": seconds,
               "images_per_s": len(data.train_index) / seconds}
        history.append(row)
        say(f"{name} epoch {epoch}/{p.epochs}: train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f} | lr {lr:.2e} | {seconds:.0f} s, "
            f"{row['images_per_s']:.0f} img/s")
        if on_epoch is not None:
            on_epoch(row)
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch,
                    "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        lrs = [row["lr"] for row in history] + [optimizer.param_groups[0]["lr"]]
        if epoch - max(best["epoch"], rising_until(lrs)) >= p.patience:
            stop_reason = f"no validation-loss improvement for {p.patience} epochs"
            break
        if epoch < p.epochs:
            checkpoint.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": _rng_state(generator, device),
                "history": history, "best": best, "elapsed": elapsed,
            })
    say(f"{name}: best val acc {history[best['epoch'] - 1]['val/acc']:.4f} at epoch {best['epoch']} "
        f"({stop_reason})")
    return _final_state(model_name, fold, model, data, history, best, elapsed, stop_reason, device,
                        checkpoint.key, p.activation)


def _final_state(model_name: str, fold: int, model: nn.Module, data: FoldData, history: list[dict],
                 best: dict, elapsed: float, stop_reason: str, device: torch.device, key: str,
                 activation: str) -> dict:
    """What a finished pair keeps: best weights, the config to rebuild it, history, metrics."""
    best_row = history[best["epoch"] - 1]
    metrics = {
        "model": model_name, "fold": fold, "best_epoch": best["epoch"], "epochs": len(history),
        "stopped": stop_reason, "val_loss": best_row["val/loss"], "val_acc": best_row["val/acc"],
        "train_acc": best_row["train/acc"], "train_seconds": round(elapsed, 1),  # excl. validation
        "images_per_s": round(len(history) * len(data.train_index) / elapsed, 1),
        "parameters": count_parameters(model), "device": device.type, "checkpoint": key,
    }
    config = {"model": model_name, "classes": data.classes, "image_size": int(data.images.shape[-1]),
              "activation": activation, "mean": data.mean.flatten().tolist(),
              "std": data.std.flatten().tolist()}
    return {"finished": True, "best_state": best["state"], "history": history, "metrics": metrics,
            "config": config}


def summarize(results: list[dict]) -> dict:
    """Per model: mean and std of the folds' best validation accuracy and loss, and each fold."""
    frame = pd.DataFrame(results)
    summary = {}
    for model, rows in frame.groupby("model", sort=False):
        summary[model] = {
            "val_acc_mean": round(rows["val_acc"].mean(), 4),
            "val_acc_std": round(rows["val_acc"].std(ddof=1), 4) if len(rows) > 1 else 0.0,
            "val_loss_mean": round(rows["val_loss"].mean(), 4),
            "epochs_mean": round(rows["epochs"].mean(), 2),
            "train_seconds": round(rows["train_seconds"].sum(), 1),
            "parameters": int(rows["parameters"].iloc[0]),
            "folds": {f"fold_{r.fold}": {"val_acc": round(r.val_acc, 4), "best_epoch": int(r.best_epoch)}
                      for r in rows.itertuples()},
        }
    return summary
