"""The stage flows through Prefect's engine (one server for the whole session)."""

import json

import pandas as pd
import pytest

from flows.download import download_flow
from flows.prepare import prepare_flow
from flows.split import split_flow
from flows.train import task_runner, train_flow
from tasks import split, train
from tests.conftest import class_images, image_folder_files, with_changes, write_prepared_split, write_tar

CLASSES = ["red", "green", "blue", "grey"]


def test_data_stages_chain(prefect_server, params, tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files(per_class=(10, 2)))
    data = params.data.model_copy(update={"source": str(archive), "checksum": ""})
    raw = download_flow(data, tmp_path / "raw")
    summary = prepare_flow(data, raw, tmp_path / "prepared")
    assert summary["train"]["images"] == 30
    out = split_flow(with_changes(params, split={"folds": 2}).split, 0,
                     tmp_path / "prepared" / "train.parquet", tmp_path / "splits")
    assert set(pd.read_parquet(out / "folds.parquet")["fold"]) == {0, 1}


@pytest.fixture
def tiny(tmp_path, params):
    pixels, labels = class_images(len(CLASSES), 24, size=16)
    paths = train.FoldPaths(prepared=tmp_path / "prepared.parquet", splits=tmp_path / "splits",
                            models=tmp_path / "models", logs=tmp_path / "logs",
                            checkpoints=tmp_path / "checkpoints")
    write_prepared_split(paths.prepared, CLASSES, pixels, labels)
    split.write_splits(split.make_splits(labels, CLASSES, with_changes(params, split={"folds": 2}).split, 0),
                       paths.splits)
    fast = with_changes(params, train={"models": ("ann", "cnn_blog"), "epochs": 2, "batch_size": 32,
                                       "device": "cpu", "parallel": 2, "retries": 0})
    return fast, paths


def test_every_model_and_fold_is_trained_and_summarised(prefect_server, tiny, tmp_path):
    params, paths = tiny
    summary = train_flow(params.train, params.augment, 0, paths, str(tmp_path / "train.json"))
    assert set(summary) == {"ann", "cnn_blog"}
    assert set(summary["ann"]["folds"]) == {"fold_0", "fold_1"}
    assert json.loads((tmp_path / "train.json").read_text()) == summary
    assert (paths.out_dir("cnn_blog", 1) / "weights.pt").exists()


def test_a_failed_fold_does_not_stop_the_others(prefect_server, tiny, tmp_path):
    params, paths = tiny
    counts = pd.read_csv(paths.splits / "class_counts.csv")
    counts.loc[counts["fold"] == 1, "loss_weight"] = float("nan")  # fold 1's loss becomes NaN
    counts.to_csv(paths.splits / "class_counts.csv", index=False)
    p = with_changes(params, train={"models": ("ann",)})
    with pytest.raises(RuntimeError, match=r"training failed for ann fold 1: .*loss is nan at epoch 1"):
        train_flow(p.train, p.augment, 0, paths, str(tmp_path / "train.json"))
    assert (paths.out_dir("ann", 0) / "metrics.json").exists()
    assert not (tmp_path / "train.json").exists()


def test_dask_runner_with_a_local_cluster_of_worker_processes(prefect_server, tiny, tmp_path):
    params, paths = tiny
    p = with_changes(params, train={"models": ("ann",), "task_runner": "dask"})
    runner = task_runner(p.train)
    assert runner.cluster_kwargs["processes"] is True
    summary = train_flow.with_options(task_runner=runner)(p.train, p.augment, 0, paths,
                                                            str(tmp_path / "train.json"))
    assert set(summary["ann"]["folds"]) == {"fold_0", "fold_1"}
