"""The stage flows through Prefect's engine (one server for the whole session)."""

import copy
import hashlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.download import download_flow
from flows.prepare import prepare_flow
from flows.split import split_flow
from flows.train import task_runner, train_flow
from tasks import train
from tasks.download import ChecksumError
from tasks.paths import Paths
from tasks.prepare import CIFAR10_CLASSES
from tasks.tables import read_prepared
from tests.conftest import (
    ROOT,
    image_folder_files,
    official_files,
    two_fold_data,
    with_changes,
    write_tar,
)

CLASSES = ["red", "green", "blue", "grey"]


def test_data_stages_chain(prefect_server, params, tmp_path):
    archive = write_tar(tmp_path / "a.tar.gz", image_folder_files(per_class=(10, 2)))
    data = params.data.model_copy(update={"source": str(archive), "checksum": ""})
    paths = Paths(tmp_path)
    download_flow(data, paths)
    summary = prepare_flow(data, paths)
    assert summary["train"]["images"] == 30
    split_flow(with_changes(params, split={"folds": 2}).split, 0, paths)
    assert set(pd.read_parquet(paths.folds)["fold"]) == {0, 1}


def test_official_archive_from_the_fallback_url_with_its_md5(prefect_server, params, tmp_path, serve):
    """What a user without the offline mirror gets: the official pickled archive over HTTP."""
    files = official_files(per_batch=6)
    archive = write_tar(tmp_path / "cifar-10-python.tar.gz", files, dirs=["cifar-10-batches-py/"])
    _, url = serve(archive)
    data = params.data.model_copy(update={
        "source": str(tmp_path / "no-mirror" / "cifar-10-jpeg.tar.gz"),
        "fallback_source": url, "fallback_checksum": "md5:" + hashlib.md5(archive.read_bytes()).hexdigest()})
    paths = Paths(tmp_path)
    download_flow(data, paths)
    assert json.loads(paths.source_info.read_text())["source"] == url
    summary = prepare_flow(data, paths)
    assert summary["train"]["images"] == 30 and summary["test"]["images"] == 6

    # The batches as any CIFAR-10 loader reads them: rows of 3072 bytes, channel planes first.
    batches = [pickle.loads(files[f"cifar-10-batches-py/data_batch_{i}"], encoding="bytes") for i in range(1, 6)]
    pixels, labels, classes = read_prepared(paths.prepared_train)
    expected = np.concatenate([b[b"data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    assert np.array_equal(pixels, expected)
    assert labels.tolist() == [label for b in batches for label in b[b"labels"]]
    assert classes == list(CIFAR10_CLASSES)

    wrong = data.model_copy(update={"fallback_checksum": "md5:" + "0" * 32, "download_retries": 1})
    with pytest.raises(ChecksumError, match=rf"^{url}: md5 is [0-9a-f]{{32}}, expected 0{{32}}"):
        download_flow(wrong, paths)
    assert json.loads(paths.source_info.read_text())["source"] == url  # the good copy stays


def test_a_download_that_keeps_failing_ends_with_one_line(prefect_server, tmp_path, serve, raw_params):
    """After its retries, the stage's last words name the URL and the cause; no traceback ends it."""
    handler, url = serve(write_tar(tmp_path / "cifar-10-python.tar.gz", official_files()))
    handler.fail_with = 503
    project = tmp_path / "project"
    project.mkdir()
    raw = copy.deepcopy(raw_params)
    raw["data"].update(source="absent.tar.gz", fallback_source=url, fallback_checksum="", download_retries=2)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    done = subprocess.run([sys.executable, "-m", "flows.download"], cwd=project, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == f"error: {url}: HTTP 503 Service Unavailable"
    assert "Traceback" not in done.stdout + done.stderr  # Prefect's lines stay, without their tracebacks
    assert len(handler.requests) == 2  # the first attempt and its one retry
    assert not (project / "data" / "raw").exists()


def _bad_archive(tmp_path: Path, kind: str) -> tuple[Path, str, str]:
    """(archive, data.checksum, the error line's tail) for one kind of bad input."""
    good = write_tar(tmp_path / "a.tar.gz", image_folder_files())
    if kind == "checksum":
        digest = hashlib.sha256(good.read_bytes()).hexdigest()
        return good, "sha256:" + "0" * 64, f"{good}: sha256 is {digest}, expected {'0' * 64}"
    if kind == "truncated":
        cut = tmp_path / "cut.tar.gz"
        cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
        return cut, "", f"{cut}: truncated or corrupt archive (unexpected end of data)"
    wrong = write_tar(tmp_path / "docs.tar.gz", {"docs/readme.txt": b"x"})
    return wrong, "", f"{wrong}: wrong layout: expected train/<class>/<image>"


@pytest.mark.parametrize("kind", ["checksum", "truncated", "layout"])
def test_a_bad_archive_ends_the_stage_with_one_line(prefect_server, tmp_path, raw_params, kind):
    archive, checksum, message = _bad_archive(tmp_path, kind)
    params = copy.deepcopy(raw_params)
    params["data"].update(source=str(archive), checksum=checksum, download_retries=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run([sys.executable, "-m", "flows.download"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("error: ") and message in last, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr


def test_the_debug_switch_brings_the_traceback_back(tmp_path, raw_params):
    broken = copy.deepcopy(raw_params)
    broken["split"]["folds"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(broken))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    quiet = subprocess.run([sys.executable, "-m", "flows.split"], cwd=tmp_path, capture_output=True, text=True,
                           env=env, timeout=120)
    loud = subprocess.run([sys.executable, "-m", "flows.split"], cwd=tmp_path, capture_output=True, text=True,
                          env=dict(env, PIPELINE_DEBUG="1"), timeout=120)
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr and "split.folds = 1" in quiet.stderr.splitlines()[-1]
    assert "Traceback" in loud.stderr and "ParamsError" in loud.stderr


@pytest.fixture
def tiny(tmp_path, params, monkeypatch):
    # Outside the project's DVC repository: DVCLive signals each epoch to DVC's VS Code extension
    # in the repository it runs in (.dvc/tmp/exps/run/), and two folds ending at once race on
    # removing that file (dvclive.vscode.cleanup_dvclive_step_completed).
    monkeypatch.chdir(tmp_path)
    paths, _, _ = two_fold_data(tmp_path, params, CLASSES, 24, size=16)
    fast = with_changes(params, train={"models": ("ann", "cnn_blog"), "epochs": 2, "batch_size": 32,
                                       "device": "cpu", "parallel": 2, "retries": 0})
    return fast, paths


def test_every_model_and_fold_is_trained_and_summarised(prefect_server, tiny, tmp_path):
    params, paths = tiny
    summary = train_flow(params.train, params.augment, 0, paths)
    assert set(summary) == {"ann", "cnn_blog"}
    assert set(summary["ann"]["folds"]) == {"fold_0", "fold_1"}
    assert json.loads(paths.train_metrics.read_text()) == summary
    assert (paths.fold_dir("cnn_blog", 1) / "weights.pt").exists()


def test_a_failed_fold_does_not_stop_the_others(prefect_server, tiny, tmp_path):
    params, paths = tiny
    counts = pd.read_csv(paths.class_counts)
    counts.loc[counts["fold"] == 1, "loss_weight"] = float("nan")  # fold 1's loss becomes NaN
    counts.to_csv(paths.class_counts, index=False)
    p = with_changes(params, train={"models": ("ann",)})
    with pytest.raises(RuntimeError, match=r"training failed for ann fold 1: .*loss is nan at epoch 1"):
        train_flow(p.train, p.augment, 0, paths)
    assert (paths.fold_dir("ann", 0) / "metrics.json").exists()
    assert not paths.train_metrics.exists()


def test_dask_runner_with_a_local_cluster_of_worker_processes(prefect_server, tiny, tmp_path):
    params, paths = tiny
    p = with_changes(params, train={"models": ("ann",), "task_runner": "dask"})
    runner = task_runner(p.train)
    assert runner.cluster_kwargs["processes"] is True
    summary = train_flow.with_options(task_runner=runner)(p.train, p.augment, 0, paths)
    assert set(summary["ann"]["folds"]) == {"fold_0", "fold_1"}


def counting(monkeypatch, name: str, before=None) -> dict:
    """Wrap `tasks.train.<name>` (looked up at call time by train_fold) to count calls per fold."""
    real, calls = getattr(train, name), {}

    def wrapper(*args, **kwargs):
        fold = args[1].fold if name == "load_fold" else int(args[1].val_index[0])
        calls[fold] = calls.get(fold, 0) + 1
        if before:
            before(fold, calls[fold])
        return real(*args, **kwargs)

    monkeypatch.setattr(train, name, wrapper)
    return calls


def test_a_crashed_fold_is_retried_and_resumes_from_its_checkpoint(prefect_server, tiny, tmp_path, monkeypatch):
    params, paths = tiny
    p = with_changes(params, train={"models": ("ann",), "epochs": 3, "retries": 1, "parallel": 1})
    loads = counting(monkeypatch, "load_fold")
    crashed = []

    def crash_in_epoch_2_once(fold, n):
        if n == 2 and not crashed:  # epoch 1 is checkpointed; the machine "dies" in epoch 2
            crashed.append(fold)
            raise MemoryError("the worker ran out of memory")

    epochs = counting(monkeypatch, "train_one_epoch", crash_in_epoch_2_once)
    summary = train_flow(p.train, p.augment, 0, paths)
    assert set(summary["ann"]["folds"]) == {"fold_0", "fold_1"}
    first = crashed[0]
    assert sorted(loads.values()) == [1, 2]  # one fold was started twice
    assert epochs[first] == 4  # epoch 1, the crashed epoch 2, then 2 and 3 after resuming (not 1, 2, 3)
    history = pd.read_csv(paths.fold_dir("ann", 0) / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3]


def test_a_diverged_fold_is_not_retried(prefect_server, tiny, tmp_path, monkeypatch):
    params, paths = tiny
    counts = pd.read_csv(paths.class_counts)
    counts.loc[counts["fold"] == 1, "loss_weight"] = float("nan")
    counts.to_csv(paths.class_counts, index=False)
    p = with_changes(params, train={"models": ("ann",), "retries": 2, "parallel": 1})
    loads = counting(monkeypatch, "load_fold")
    with pytest.raises(RuntimeError, match=r"training failed for ann fold 1: .*loss is nan at epoch 1"):
        train_flow(p.train, p.augment, 0, paths)
    assert loads == {0: 1, 1: 1}  # retrying would only diverge again


def test_prefect_reads_the_projects_settings_wherever_it_starts():
    """`dvc repro` run directly (not through make) gets the same settings: no telemetry on an
    offline machine, a patient temporary server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"}
    done = subprocess.run([sys.executable, "-m", "prefect", "config", "view", "--show-sources"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)
    assert "PREFECT_SERVER_ANALYTICS_ENABLED='False' (from prefect.toml)" in done.stdout
    assert "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS='120' (from prefect.toml)" in done.stdout
