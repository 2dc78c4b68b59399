"""The train stage's fan-out on a real Dask cluster against the `processes` runner, in one run.

    python -m benchmarks.dask_cluster [--workers 2] [--set train.epochs=1]

Trains the quick variant's pairs (its settings read from the Makefile: a stratified 20 % of the
training images in 2 folds, 4 epochs, both models) on the prepared data of the last `dvc repro`,
in a scratch folder, twice: with `train.task_runner=processes`, then on an external cluster
(`dask scheduler` plus `--workers` single-threaded `dask worker` processes, each in an empty
folder of its own: tests/dask_cluster.py). Prints each runner's wall time and what the data
shipping costs: the training set every task needs (in the processes runner, pickled into every
task; on Dask, sent once as the share task's result and fetched by each worker once), a task's
own arguments, and how often the workers fetched the training set from each other. Never fails
on slowness.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.orchestration_overhead import quick_overrides
from flows.server import running_server
from flows.train import task_runner, train_flow
from flows.train_compare import parse_sets
from tasks import split, train
from tasks.config import PARAMS_FILE
from tasks.paths import Paths
from tasks.presets import resolve
from tasks.tables import read_labels
from tests.dask_cluster import Cluster


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def fetched_keys(address: str) -> list[str]:
    """The results the cluster's workers fetched from one another (Dask's transfer log), by key.
    (The log's byte counts are Dask's size estimates, which do not see into a Prefect state.)"""
    from distributed import Client

    with Client(address) as client:
        logs = client.run(lambda dask_worker: [k for e in dask_worker.transfer_incoming_log for k in e["keys"]])
    return [str(key) for keys in logs.values() for key in keys]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="key=value on top of the quick variant")
    args = parser.parse_args()
    params = resolve({**quick_overrides(), "train.parallel": args.workers, **parse_sets(args.sets)},
                     origin=f"{PARAMS_FILE} with the quick variant and {args.sets}")
    p = params.train
    project = Paths()
    with tempfile.TemporaryDirectory(prefix="bench-dask-") as tmp:
        root = Path(tmp)
        paths = Paths(root / "project")
        paths.prepared.parent.mkdir(parents=True)
        paths.prepared.symlink_to(project.prepared.resolve(), target_is_directory=True)
        labels, classes = read_labels(project.prepared_train)
        split.write_splits(split.make_splits(labels, classes, params.split, params.base.seed), paths)
        data = train.read_training_set(paths)
        one_split = train.read_fold_split(paths, 0, classes)
        pairs = len(p.models) * train.fold_count(paths)
        task_args = len(pickle.dumps((one_split, params.train, params.augment)))
        data_bytes = len(pickle.dumps(data))

        walls = {}
        with running_server(home=root / "prefect") as api_url:
            os.environ["PREFECT_API_URL"] = api_url  # for the workers too: their logs reach this server
            local = p.model_copy(update={"task_runner": "processes"})
            started = time.perf_counter()
            train_flow.with_options(task_runner=task_runner(local))(local, params.augment, params.base.seed, paths)
            walls["processes"] = time.perf_counter() - started
            for folder in (paths.models, paths.train_logs, paths.checkpoints):
                shutil.rmtree(folder, ignore_errors=True)
            with Cluster(root / "cluster", workers=args.workers) as cluster:
                remote = p.model_copy(update={"task_runner": "dask", "dask_address": cluster.address})
                started = time.perf_counter()
                train_flow.with_options(task_runner=task_runner(remote))(remote, params.augment, params.base.seed,
                                                                          paths)
                walls["dask"] = time.perf_counter() - started
                fetched = fetched_keys(cluster.address)
    shared = sum(key.startswith("_share") for key in fetched)

    print(f"\nquick variant ({', '.join(p.models)}; {pairs} (model, fold) tasks, {p.epochs} epochs, "
          f"{p.parallel} at once; {os.cpu_count()} cores)")
    print(f"  processes runner:          {walls['processes']:6.1f} s  (each task pickles the training set, "
          f"{_mb(data_bytes)}, and its own arguments, {task_args / 1e3:.0f} kB: "
          f"{_mb(pairs * (data_bytes + task_args))} in all)")
    print(f"  dask, {args.workers} external workers: {walls['dask']:6.1f} s  (the training set once, "
          f"{_mb(data_bytes)}, in the share task, then moved between workers {shared} time(s); each task's "
          f"arguments {task_args / 1e3:.0f} kB: {_mb(data_bytes * (1 + shared) + pairs * task_args)} in all)")
    print(f"  dask / processes: {walls['dask'] / walls['processes']:.2f}")


if __name__ == "__main__":
    main()
