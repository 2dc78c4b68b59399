"""Stage `tune`: `python -m flows.tune` (tune/dvc.yaml; `dvc repro tune/dvc.yaml`, not part of a
plain `dvc repro`); `python -m flows.tune table` then collects the study into tune/summary.json,
which the report reads.

`tune.parallel` workers of one Optuna study, fanned out as Prefect tasks on the configured task
runner (the train stage's runners: threads, processes or a Dask cluster); each runs trials until
the study holds `tune.trials` finished ones or `tune.timeout_minutes` is spent. Then the trials
table, the best recipe (a preset file) and Optuna's plots are written.
"""

from __future__ import annotations

import argparse

import pandas as pd
from prefect import flow

from flows.common import PATHS, available_cpus, stage_main, step
from flows.train import task_runner
from tasks import tune
from tasks.config import Params, load_params
from tasks.io import write_json
from tasks.models import check_names
from tasks.paths import Paths

run_trials = step(tune.run_trials, task_run_name="tune-worker-{worker}")


@flow(name="tune", log_prints=True)
def tune_flow(params: Params, paths: Paths = PATHS) -> dict:
    threads = max(1, available_cpus() // params.tune.parallel)
    tune.open_study(params, paths)  # created once here, before workers race to create it
    futures = [run_trials.submit(params, paths, w, threads) for w in range(params.tune.parallel)]
    failed = []
    for w, future in enumerate(futures):
        future.wait()
        if not future.state.is_completed():
            failed.append(f"worker {w}: {future.state.message}")
    if failed:
        raise RuntimeError("tuning failed: " + "; ".join(failed))
    summary = tune.summarize(params, paths)
    print(f"study {summary['study']}: {summary['completed']} trials completed, {summary['pruned']} pruned, "
          f"{summary['failed']} failed; "
          f"best val acc {summary['best_val_acc']:.4f} (trial {summary['best_trial']}) against "
          f"{summary['baseline_val_acc']} for params.yaml's recipe; apply it with "
          f"`python -m flows.train_compare run --preset {paths.tune_best}`")
    return summary


def table(params: Params, paths: Paths = PATHS) -> dict:
    """Collect the study of params.yaml's `tune` section into tune/summary.json (for the report)."""
    record = tune.results_record(params, paths, pd.Timestamp.now(tz="UTC").floor("s"))
    write_json(paths.tune_summary, record)
    summary = record["summary"]
    found = (f"{len(record['trials'])} trials, best val acc {summary['best_val_acc']:.4f} against "
             f"{summary['baseline_val_acc']} for params.yaml's recipe" if summary else
             "no completed trial yet (`dvc repro tune/dvc.yaml` runs the study)")
    print(f"wrote {paths.tune_summary}: study {record['study']}, {found}; "
          "`dvc repro report` shows it in the report")
    return record


def run() -> None:
    params = load_params()
    check_names([params.tune.model])
    runner = task_runner(params.train.model_copy(
        update={"parallel": params.tune.parallel, "task_runner": params.tune.task_runner}))
    tune_flow.with_options(task_runner=runner)(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("action", nargs="?", choices=("run", "table"), default="run",
                        help="run: the study (the tune stage's command); table: collect it into tune/summary.json")
    action = parser.parse_args().action
    stage_main(run if action == "run" else lambda: table(load_params()))


if __name__ == "__main__":
    main()
