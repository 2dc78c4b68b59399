"""The train stage against a real Dask cluster (tests/dask_cluster.py): workers in empty folders
of their own, sharing nothing with the stage but the network and the checkpoint location."""

import shutil
import threading
import time

import pandas as pd
import pytest
import torch

from flows.train import task_runner, train_flow
from tests.conftest import two_fold_data, with_changes
from tests.dask_cluster import Cluster

CLASSES = ["red", "green", "blue", "grey"]
TIMING = {"train_seconds", "images_per_s", "seconds", "checkpoint"}


@pytest.fixture
def tiny(tmp_path, params, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the project's DVC repository (see test_flows.py)
    paths, _, _ = two_fold_data(tmp_path / "project", params, CLASSES, 24, size=16)
    fast = with_changes(params, train={"models": ("ann", "cnn_blog"), "epochs": 2, "batch_size": 32,
                                       "device": "cpu", "parallel": 2, "retries": 1})
    return fast, paths


@pytest.fixture
def cluster(tmp_path, prefect_server):
    with Cluster(tmp_path / "cluster", workers=2) as running:
        yield running


def outputs(paths, model: str, fold: int) -> tuple[dict, pd.DataFrame, dict]:
    folder = paths.fold_dir(model, fold)
    metrics = pd.read_json(folder / "metrics.json", typ="series").to_dict()
    history = pd.read_csv(folder / "history.csv").drop(columns=["seconds", "images_per_s"])
    weights = torch.load(folder / "weights.pt", weights_only=True)["state_dict"]
    return {k: v for k, v in metrics.items() if k not in TIMING}, history, weights


def test_an_external_cluster_trains_what_the_processes_runner_does(tiny, cluster, tmp_path, capsys, caplog):
    params, paths = tiny
    local = with_changes(params, train={"task_runner": "processes"})
    train_flow.with_options(task_runner=task_runner(local.train))(local.train, local.augment, 0, paths)
    expected = {(m, k): outputs(paths, m, k) for m in params.train.models for k in (0, 1)}
    for folder in (paths.models, paths.train_logs, paths.checkpoints):
        shutil.rmtree(folder, ignore_errors=True)
    capsys.readouterr()
    caplog.clear()

    remote = with_changes(params, train={"task_runner": "dask", "dask_address": cluster.address})
    state = train_flow.with_options(task_runner=task_runner(remote.train))(remote.train, remote.augment, 0, paths,
                                                                          return_state=True)
    assert set(state.result()) == {"ann", "cnn_blog"}
    for (model, fold), (metrics, history, weights) in expected.items():
        got_metrics, got_history, got_weights = outputs(paths, model, fold)
        assert got_metrics == metrics
        pd.testing.assert_frame_equal(got_history, history)
        assert all(torch.equal(got_weights[k], weights[k]) for k in weights)
        assert list((paths.fold_log_dir(model, fold) / "plots" / "metrics").iterdir())
    seen = capsys.readouterr().out + caplog.text
    assert "ann fold 1 epoch 2/2" in seen  # a worker's progress, in the stage's own output
    assert f"Dask cluster at {cluster.address}: 2 workers, 2 threads; dashboard http://" in seen
    assert "ann fold 1 epoch 2/2" in cluster.log("worker-0") + cluster.log("worker-1")
    # ... and in the Prefect UI, under the stage's flow run.
    assert any("ann fold 1 epoch 2/2" in log.message
               for log in api_logs(state.state_details.flow_run_id, "ann fold 1 epoch 2/2"))


def api_logs(flow_run_id, waiting_for: str, timeout: float = 30) -> list:
    """The flow run's logs in Prefect's API, once one holds `waiting_for` (workers send in batches)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any(waiting_for in log.message for log in logs) or time.monotonic() > deadline:
                return logs
            time.sleep(0.5)


def test_a_killed_worker_does_not_stop_the_stage(tiny, cluster, tmp_path, capsys, caplog):
    params, paths = tiny
    p = with_changes(params, train={"models": ("cnn_blog",), "epochs": 12, "task_runner": "dask",
                                    "dask_address": cluster.address,
                                    "checkpoints": str(tmp_path / "shared-checkpoints")})  # the workers' common disk
    killed = []

    def kill_a_worker_after_its_first_checkpoint():
        while not killed:  # a worker that logs epoch 2 has checkpointed epoch 1
            for name in ("worker-0", "worker-1"):
                if "epoch 2/12" in cluster.log(name):
                    cluster.kill(name)
                    killed.append(name)
                    return
            threading.Event().wait(0.02)

    watcher = threading.Thread(target=kill_a_worker_after_its_first_checkpoint, daemon=True)
    watcher.start()
    summary = train_flow.with_options(task_runner=task_runner(p.train))(p.train, p.augment, 0, paths)
    watcher.join(timeout=5)
    assert killed and set(summary["cnn_blog"]["folds"]) == {"fold_0", "fold_1"}
    assert "resuming after epoch" in capsys.readouterr().out + caplog.text
    for fold in (0, 1):
        history = pd.read_csv(paths.fold_dir("cnn_blog", fold) / "history.csv")
        assert history["epoch"].tolist() == list(range(1, len(history) + 1))


def test_an_exception_on_a_worker_fails_the_stage_with_its_message(tiny, cluster):
    params, paths = tiny
    counts = pd.read_csv(paths.class_counts)
    counts.loc[counts["fold"] == 1, "loss_weight"] = float("nan")
    counts.to_csv(paths.class_counts, index=False)
    p = with_changes(params, train={"models": ("ann",), "task_runner": "dask", "dask_address": cluster.address})
    with pytest.raises(RuntimeError, match=r"training failed for ann fold 1: TrainingDiverged: ann fold 1: "
                                           r"training loss is nan at epoch 1 \(at train\.py:\d+ in fit, on "):
        train_flow.with_options(task_runner=task_runner(p.train))(p.train, p.augment, 0, paths)
    assert (paths.fold_dir("ann", 0) / "metrics.json").exists()
