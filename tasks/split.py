"""Stage 3: stratified k-fold assignment and class balancing of the training set.

Outputs (all in `data/splits/`):
- `holdout.parquet`: `id`, `label` of the stratified holdout fraction (`split.holdout`) taken out
  of the training set before anything else and never used afterwards, as the study's notebook
  does with 20 %; empty when the fraction is 0 (the default: every image goes into the folds);
- `folds.parquet`: `id`, `label`, `fold` for every training image kept (after the optional
  long-tail simulation and the stratified subsample of the fast variant);
- `train_index.parquet`: `fold`, `id`: the images each fold trains on (all folds but its own),
  with minority classes randomly oversampled up to the majority when balancing is `oversample`;
- `class_counts.csv`: per fold and class the training count before and after balancing and the
  loss weight (`class_weight` balancing; 1.0 otherwise), ready for `dvc plots`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from tasks.config import SplitParams
from tasks.io import atomic_path
from tasks.paths import Paths


@dataclass(frozen=True)
class Splits:
    holdout: pd.DataFrame
    folds: pd.DataFrame
    train_index: pd.DataFrame
    class_counts: pd.DataFrame


def simulate_imbalance(labels: np.ndarray, classes: int, ratio: float, rng) -> np.ndarray:
    """Ids kept by a CIFAR-LT style long tail: class i keeps n_i * ratio^(i / (classes - 1))."""
    keep = []
    for c in range(classes):
        ids = np.flatnonzero(labels == c)
        n = max(1, round(len(ids) * ratio ** (c / max(classes - 1, 1))))
        keep.append(np.sort(rng.permutation(ids)[:n]))
    return np.sort(np.concatenate(keep))


def assign_folds(labels: np.ndarray, ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Validation fold of each id, stratified by label (scikit-learn's StratifiedKFold)."""
    counts = np.bincount(labels[ids])
    present = counts[counts > 0]
    if present.min() < folds:
        raise ValueError(
            f"split.folds = {folds}: class {int(np.flatnonzero(counts == present.min())[0])} "
            f"has only {present.min()} training images; each class needs at least one per fold"
        )
    fold_of = np.empty(len(ids), np.int16)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for k, (_, val) in enumerate(splitter.split(ids, labels[ids])):
        fold_of[val] = k
    return fold_of


def balance_fold(train_ids: np.ndarray, labels: np.ndarray, strategy: str, rng) -> np.ndarray:
    """Training ids of one fold; `oversample` adds random repeats of minority classes."""
    if strategy != "oversample":
        return train_ids
    counts = np.bincount(labels[train_ids])
    extra = [
        rng.choice(train_ids[labels[train_ids] == c], counts.max() - counts[c], replace=True)
        for c in np.flatnonzero(counts)
        if counts[c] < counts.max()
    ]
    return np.sort(np.concatenate([train_ids, *extra]))


def make_splits(labels: np.ndarray, classes: list[str], params: SplitParams, seed: int) -> Splits:
    rng = np.random.default_rng(seed)
    ids = np.arange(len(labels))
    held = ids[:0]
    if params.holdout > 0:
        ids, held = train_test_split(ids, test_size=params.holdout, stratify=labels, random_state=seed)
        ids, held = np.sort(ids), np.sort(held)
    if params.imbalance < 1:
        ids = simulate_imbalance(labels, len(classes), params.imbalance, rng)
    if params.subsample < 1:
        ids, _ = train_test_split(
            ids, train_size=params.subsample, stratify=labels[ids], random_state=seed
        )
        ids = np.sort(ids)
    fold_of = assign_folds(labels, ids, params.folds, seed)

    index_parts, count_rows = [], []
    for k in range(params.folds):
        before = ids[fold_of != k]
        after = balance_fold(before, labels, params.balancing, rng)
        index_parts.append(pd.DataFrame({"fold": np.int16(k), "id": after.astype(np.int32)}))
        n_before = np.bincount(labels[before], minlength=len(classes))
        n_after = np.bincount(labels[after], minlength=len(classes))
        # sklearn's "balanced" weights: n / (classes_present * n_c), so the mean weight is 1.
        present = np.count_nonzero(n_before)
        weights = np.where(n_before > 0, len(before) / (present * np.maximum(n_before, 1)), 0.0)
        if params.balancing != "class_weight":
            weights = np.ones(len(classes))
        count_rows += [
            {"fold": k, "class": name, "before": int(n_before[c]), "after": int(n_after[c]),
             "loss_weight": round(float(weights[c]), 6)}
            for c, name in enumerate(classes)
        ]
    folds = pd.DataFrame({"id": ids.astype(np.int32), "label": labels[ids].astype(np.int16),
                          "fold": fold_of})
    holdout = pd.DataFrame({"id": held.astype(np.int32), "label": labels[held].astype(np.int16)})
    return Splits(holdout, folds, pd.concat(index_parts, ignore_index=True), pd.DataFrame(count_rows))


def write_splits(splits: Splits, paths: Paths) -> Path:
    """Replace the splits folder with the four split tables in one rename."""
    with atomic_path(paths.splits, directory=True) as tmp:
        splits.holdout.to_parquet(tmp / paths.holdout.name, index=False)
        splits.folds.to_parquet(tmp / paths.folds.name, index=False)
        splits.train_index.to_parquet(tmp / paths.train_index.name, index=False)
        splits.class_counts.to_csv(tmp / paths.class_counts.name, index=False)
    folds = splits.folds["fold"].nunique()
    print(f"{paths.splits}: {len(splits.holdout)} images held out, {len(splits.folds)} training "
          f"images in {folds} folds, {len(splits.train_index)} fold-training rows after balancing")
    return paths.splits
