"""Stage `train`: `python -m flows.train` (see dvc.yaml).

One Prefect task per (model, fold), fanned out on the configured task runner (threads,
processes or a Dask cluster). The stage reads the data and sends each task what it trains on;
the task sends back its final state, and the stage writes the outputs where DVC expects them, so
a worker needs nothing from the stage's disk (only `train.checkpoints`, which every worker must
reach). A failed pair does not stop the others; the stage fails at the end and names every failed
pair with its exception. Re-running resumes interrupted pairs from their checkpoints and restores
finished ones without training them again.
"""

from __future__ import annotations

from prefect import flow
from prefect.context import FlowRunContext
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from flows.common import PATHS, available_cpus, stage_main, step
from tasks import train
from tasks.config import AugmentParams, TrainParams, load_params
from tasks.io import write_json
from tasks.models import check_names
from tasks.paths import Paths


def _not_diverged(task, task_run, state) -> bool:
    """Retry crashes and I/O errors, not a diverged loss: that would diverge again."""
    try:
        state.result()
    except train.TrainingDiverged:
        return False
    except Exception:
        return True
    return True


train_pair = step(train.train_pair, retry_condition_fn=_not_diverged,
                  task_run_name="train-{model_name}-fold-{split.fold}")


def task_runner(p: TrainParams):
    if p.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # optional: only Dask users need it loaded

        if p.dask_address:
            return DaskTaskRunner(address=p.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": p.parallel, "threads_per_worker": 1,
                                              "processes": True})
    if p.task_runner == "processes":
        return ProcessPoolTaskRunner(max_workers=p.parallel)
    return ThreadPoolTaskRunner(max_workers=p.parallel)


def failure(future) -> str:
    """A failed task's exception as `Type: message (notes)`: the notes say where it was raised.
    Asked of the future, not of its state: on Dask, a task that never reported (its worker or its
    input was lost) has only the Dask future's exception to tell."""
    try:
        future.result()
    except BaseException as exc:  # noqa: BLE001 - the point is to describe it
        notes = "; ".join(getattr(exc, "__notes__", ()))
        return f"{type(exc).__name__}: {exc}" + (f" ({notes})" if notes else "")
    return future.state.message or future.state.name


def _share(data: train.TrainingSet) -> train.TrainingSet:
    return data


# On Dask, a task's result stays on the worker that made it and moves to the workers that need it,
# once each: so the training set goes to the cluster as this task's result, not once per training
# task, and Dask recomputes it if the worker holding it is lost.
share = step(_share, name="share-training-set")


def on_cluster(data: train.TrainingSet):
    """On a Dask runner: log the cluster's address, size and dashboard, and put the training set
    on it once. Elsewhere the data itself, sent with each task."""
    runner = FlowRunContext.get().task_runner
    if not hasattr(runner, "client"):  # threads or processes
        return data
    client = runner.client
    threads = client.nthreads()
    print(f"Dask cluster at {client.scheduler.address}: {len(threads)} workers, "
          f"{sum(threads.values())} threads; dashboard {client.dashboard_link}")
    return share.submit(data)


@flow(name="train", log_prints=True)
def train_flow(params: TrainParams, augment: AugmentParams, seed: int,
               paths: Paths = PATHS) -> dict:
    # Parallel folds share the stage's cores: each gets its slice so they do not oversubscribe them.
    threads = max(1, available_cpus() // params.parallel)
    data = train.read_training_set(paths)
    splits = [train.read_fold_split(paths, k, data.classes) for k in range(train.fold_count(paths))]
    shared = on_cluster(data)
    checkpoints = train.checkpoint_root(params, paths)
    pairs = [(m, split) for m in params.models for split in splits]
    runner_task = train_pair.with_options(retries=params.retries)
    futures = [runner_task.submit(m, split, shared, seed, params, augment, checkpoints, threads)
               for m, split in pairs]
    results, failed = [], []
    for (model, split), future in zip(pairs, futures, strict=True):
        future.wait()
        if future.state.is_completed():
            results.append(train.publish(paths, future.result()))
        else:
            failed.append(f"{model} fold {split.fold}: {failure(future)}")
    if failed:
        raise RuntimeError("training failed for " + "; ".join(failed))
    summary = train.summarize(results)
    write_json(paths.train_metrics, summary)
    return summary


def main() -> None:
    params = load_params()
    check_names(params.train.models)
    flow_ = train_flow.with_options(task_runner=task_runner(params.train))
    flow_(params.train, params.augment, params.base.seed)


if __name__ == "__main__":
    stage_main(main)
