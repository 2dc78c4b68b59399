import numpy as np
import pytest

from tasks import split
from tasks.paths import Paths
from tests.conftest import with_changes

CLASSES = [f"c{i}" for i in range(10)]


def labels_balanced(per_class=50):
    return np.repeat(np.arange(10), per_class)


def make(params, labels, seed=0, **changes):
    return split.make_splits(labels, CLASSES, with_changes(params, split=changes).split, seed)


def test_folds_are_stratified_within_one_image_per_class(params):
    labels = np.random.default_rng(0).integers(0, 10, 997)
    s = make(params, labels, folds=5, balancing="none")
    whole = np.bincount(labels, minlength=10) / 5
    for k in range(5):
        counts = np.bincount(s.folds.loc[s.folds.fold == k, "label"], minlength=10)
        assert np.all(np.abs(counts - whole) <= 1)
    assert sorted(s.folds["id"]) == list(range(997))


def test_oversampling_balances_training_folds_without_leaking_validation(params):
    labels = np.concatenate([np.full(100, 0), np.full(40, 1), np.full(10, 2)])
    s = split.make_splits(labels, ["a", "b", "c"], with_changes(
        params, split={"folds": 5, "balancing": "oversample"}).split, 0)
    for k in range(5):
        train_ids = s.train_index.loc[s.train_index.fold == k, "id"].to_numpy()
        val_ids = set(s.folds.loc[s.folds.fold == k, "id"])
        assert not val_ids & set(train_ids)
        assert np.bincount(labels[train_ids]).tolist() == [80, 80, 80]
    counts = s.class_counts[s.class_counts.fold == 0].set_index("class")
    assert counts["before"].tolist() == [80, 32, 8] and counts["after"].tolist() == [80, 80, 80]


def test_class_weight_balancing(params):
    labels = np.concatenate([np.full(80, 0), np.full(20, 1)])
    s = split.make_splits(labels, ["a", "b"], with_changes(
        params, split={"folds": 2, "balancing": "class_weight"}).split, 0)
    weights = s.class_counts[s.class_counts.fold == 0]["loss_weight"].tolist()
    assert weights == pytest.approx([50 / 80, 50 / 20])  # n / (classes * n_c)
    assert len(s.train_index[s.train_index.fold == 0]) == 50  # no oversampling


def test_imbalance_simulation_keeps_a_long_tail(params):
    s = make(params, labels_balanced(100), imbalance=0.1, balancing="none")
    kept = np.bincount(s.folds["label"], minlength=10)
    assert kept[0] == 100 and kept[9] == 10
    assert np.all(np.diff(kept) <= 0)


def test_subsample_is_stratified(params):
    s = make(params, labels_balanced(100), subsample=0.2)
    assert np.bincount(s.folds["label"]).tolist() == [20] * 10


def test_same_seed_same_splits_other_seed_other_splits(params):
    a, b = make(params, labels_balanced(), seed=1), make(params, labels_balanced(), seed=1)
    c = make(params, labels_balanced(), seed=2)
    assert a.folds.equals(b.folds) and a.train_index.equals(b.train_index)
    assert not a.folds.equals(c.folds)


def test_too_few_images_for_the_folds(params):
    labels = np.concatenate([np.repeat(np.arange(9), 10), [9, 9]])  # class 9 has 2 images
    with pytest.raises(ValueError, match="split.folds = 5: class 9 has only 2 training images"):
        make(params, labels, folds=5)


def test_write_splits_replaces_the_folder_whole(params, tmp_path):
    s = make(params, labels_balanced())
    out = split.write_splits(s, Paths(tmp_path))
    assert sorted(p.name for p in out.iterdir()) == ["class_counts.csv", "folds.parquet", "holdout.parquet",
                                                     "train_index.parquet"]
    assert [p.name for p in out.parent.iterdir()] == ["splits"]  # no temporary left behind


def test_the_holdout_is_stratified_disjoint_from_the_folds_and_deterministic(params):
    labels = np.random.default_rng(1).integers(0, 10, 2000)
    s = make(params, labels, seed=42, holdout=0.2, folds=5, balancing="none")
    held = s.holdout["id"].to_numpy()
    assert len(held) == 400 and len(s.folds) == 1600
    # Stratified: each class's share of the holdout is its share of the whole, to one image.
    assert np.all(np.abs(np.bincount(labels[held], minlength=10) - np.bincount(labels, minlength=10) * 0.2) <= 1)
    assert (s.holdout["label"].to_numpy() == labels[held]).all()
    # Never used again: in no fold, in no fold's training index.
    assert not set(held) & set(s.folds["id"]) and not set(held) & set(s.train_index["id"])
    assert sorted([*held, *s.folds["id"]]) == list(range(2000))
    again = make(params, labels, seed=42, holdout=0.2, folds=5, balancing="none")
    assert again.holdout.equals(s.holdout) and again.folds.equals(s.folds)
    other = make(params, labels, seed=7, holdout=0.2, folds=5, balancing="none")
    assert set(other.holdout["id"]) != set(held)


def test_no_holdout_keeps_every_image_in_the_folds_as_before(params):
    labels = np.random.default_rng(2).integers(0, 10, 500)
    s = make(params, labels, holdout=0.0, folds=5)
    assert s.holdout.empty and list(s.holdout.columns) == ["id", "label"]
    assert sorted(s.folds["id"]) == list(range(500))


def test_the_holdout_comes_out_before_the_subsample(params):
    labels = np.repeat(np.arange(10), 100)
    s = make(params, labels, holdout=0.2, subsample=0.5, folds=2, balancing="none")
    assert len(s.holdout) == 200 and len(s.folds) == 400
