"""The `train-compare` flow: the whole pipeline in one Prefect flow run, and its deployment.

    python -m flows.train_compare run [--set train.epochs=3 ...]   # one run, here and now
    python -m flows.train_compare serve                            # register + execute the deployment
    prefect deployment run train-compare/<deploy.name>             # a run, from anywhere

DVC still decides what is stale: the flow walks `dvc.yaml`'s stages in `dvc repro` order and,
for each stale one, runs that stage's own flow in this process (a subflow, so the UI shows it),
then lets DVC save, cache and lock its outputs (tasks/pipeline.py). The result is the outputs and
`dvc.lock` that `dvc repro` would produce, recorded as a DVC experiment (`dvc exp show`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

from flows.common import stage_main
from flows.forkserver import use_preloaded_forkserver
from tasks import pipeline
from tasks.config import load_params


def _run_stage_here(stage) -> None:
    if Path(stage.wdir).resolve() != Path.cwd().resolve():
        raise RuntimeError(f"stage {stage.addressing} runs in {stage.wdir}, not in {Path.cwd()}")
    # No heartbeat of its own: train-compare's heartbeat already says this process is alive, and
    # Prefect 3.9 ends every flow that has one up to a second late (its heartbeat thread sleeps
    # in whole seconds and is joined at the end).
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        importlib.import_module(pipeline.stage_module(stage.cmd)).main()


@flow(name="train-compare", log_prints=True)
def train_compare(overrides: dict[str, Any] | None = None, record_experiment: bool = True,
                  experiment_name: str | None = None) -> dict[str, float]:
    """Bring every stage up to date; return the seconds each stage that ran took."""
    logger = get_run_logger()
    timings: dict[str, float] = {}
    with pipeline.overridden_params(overrides):
        with pipeline.locked_repo() as repo:
            for stage in pipeline.plan(repo):
                if not pipeline.is_stale(stage):
                    logger.info("stage %s is up to date", stage.addressing)
                    continue
                started = time.perf_counter()
                outcome = pipeline.reproduce_stage(stage, _run_stage_here)
                timings[stage.addressing] = round(time.perf_counter() - started, 2)
                logger.info("stage %s %s in %.1f s", stage.addressing, outcome, timings[stage.addressing])
        if record_experiment and timings:  # `dvc exp save` takes the repository lock itself
            name = pipeline.save_experiment(".", experiment_name)
            logger.info("recorded DVC experiment %s (dvc exp show)", name)
    if not timings:
        logger.info("every stage was up to date: nothing ran")
    return timings


def serve() -> None:
    """Register the deployment (schedule from params.yaml's `deploy`) and execute its runs."""
    pipeline.restore_interrupted_params()  # a run killed with its overrides applied left them there
    deploy = load_params().deploy
    use_preloaded_forkserver()  # each run starts with the stage modules already imported
    train_compare.serve(
        name=deploy.name,
        cron=deploy.cron if deploy.schedule else None,
        global_limit=1,  # a second run waits for the first instead of racing it for outputs
        description=__doc__,
        tags=["dvc", "cifar10"],
    )


def _parse_sets(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)  # as `dvc exp run -S` reads values
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="one run in this process")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a params.yaml override for this run, like `dvc exp run -S`")
    run.add_argument("--no-experiment", action="store_true", help="do not record a DVC experiment")
    sub.add_parser("serve", help="register the deployment and execute its runs (Ctrl-C stops)")
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if args.action == "serve":
        stage_main(serve)
    else:
        stage_main(lambda: train_compare(_parse_sets(args.set), not args.no_experiment))


if __name__ == "__main__":
    main()
