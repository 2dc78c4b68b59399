"""Stage `train`: `python -m flows.train` (see dvc.yaml).

One Prefect task per (model, fold), fanned out on the configured task runner (threads,
processes or a Dask cluster). A failed pair does not stop the others; the stage fails at the end
and names every failed pair. Re-running resumes interrupted pairs from their checkpoints and
restores finished ones without training them again.
"""

from __future__ import annotations

from prefect import flow
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


train_fold = step(train.train_fold, retry_condition_fn=_not_diverged,
                  task_run_name="train-{model_name}-fold-{fold}")
fold_count = step(train.fold_count)


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


@flow(name="train", log_prints=True)
def train_flow(params: TrainParams, augment: AugmentParams, seed: int,
               paths: Paths = PATHS) -> dict:
    # Parallel folds share the stage's cores: each gets its slice so they do not oversubscribe them.
    threads = max(1, available_cpus() // params.parallel)
    folds = fold_count(paths)
    pairs = [(m, k) for m in params.models for k in range(folds)]
    runner_task = train_fold.with_options(retries=params.retries)
    futures = [runner_task.submit(m, k, seed, params, augment, paths, threads) for m, k in pairs]
    results, failed = [], []
    for (model, fold), future in zip(pairs, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            results.append(future.result())
        else:
            failed.append(f"{model} fold {fold}: {state.message}")
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
