"""The `train-compare` flow: the whole pipeline as one DVC experiment, and its scheduled deployment.

    python -m flows.train_compare run [--set train.epochs=3 ...] [--name NAME]   # one run, here
    python -m flows.train_compare run --preset presets/study.yaml  # a preset's overrides (then --set's)
    python -m flows.train_compare serve                 # register the deployment and execute its runs
    prefect deployment run train-compare/<deploy.name>  # a run, from anywhere
    python -m flows.train_compare show NAME             # an experiment's report, without applying it

A run is DVC's own `dvc exp run --temp`: in a temporary copy of the repository (under
.dvc/tmp/exps/), DVC decides which stages are stale, restores what its cache already holds, runs
the others (`python -m flows.<stage>`, each its own flow run on the same Prefect API, tagged
`train-compare:<this run's name>`) and records the result as a named experiment (`dvc exp show`,
`dvc exp apply <name>`). The workspace, its `params.yaml` and `dvc.lock` are never touched, so a
run neither disturbs nor is disturbed by a `dvc repro` there. The experiment's metrics and report
are published as artifacts of this flow run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL

from flows.common import PATHS, RUN_TAG_ENV, stage_main
from tasks.config import load_params
from tasks.errors import PipelineError
from tasks.io import write_atomic
from tasks.presets import load_preset


def experiment_name(run_name: str, now: datetime) -> str:
    """A readable, unique experiment name: when, and which flow run made it."""
    return f"{now:%Y%m%d-%H%M}-{run_name}"


def require_dvc() -> None:
    """DVC runs each experiment's stages as `python -m flows.<stage>`, so it has to be the
    project's environment's `dvc` on PATH; without it, one line that says so (not a traceback)."""
    if shutil.which("dvc") is None:
        raise PipelineError("`dvc` is not on PATH: activate the project's environment first "
                            "(`source .venv/bin/activate`, or `make setup` on a fresh clone)")


def exp_run_command(overrides: dict[str, Any] | None, name: str, queue: bool = False) -> list[str]:
    """`dvc exp run --temp` (or `--queue`: run later by `dvc queue start`) with each override as
    `--set-param` (values written as YAML, which is how DVC reads them). `--wait-for-lock`: a
    `dvc repro` holds the workspace's lock only between its stages, so the run waits those few
    seconds instead of failing."""
    command = ["dvc", "--wait-for-lock", "exp", "run", "--queue" if queue else "--temp", "--name", name]
    for key, value in (overrides or {}).items():
        rendered = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")
        command += ["--set-param", f"{key}={rendered}"]
    return command


def _stream(command: list[str], env: dict[str, str]) -> None:
    """Run `command`, passing each line of its output to this flow run's log as it comes."""
    logger = get_run_logger()
    logger.info("$ %s", " ".join(command))
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as process:
        tail: list[str] = []
        for line in process.stdout:
            logger.info(line.rstrip())
            tail = (tail + [line.rstrip()])[-20:]
    if process.returncode:
        raise RuntimeError(f"`{' '.join(command)}` failed (exit {process.returncode}):\n" + "\n".join(tail))


def _publish(name: str) -> dict:
    """The experiment's metrics and report, as artifacts of this flow run; returns the metrics."""
    import dvc.api  # imported here: only a finished run needs it

    metrics = json.loads(dvc.api.read(str(PATHS.eval_metrics), rev=name))
    rows = [{"model": model, **{k: v for k, v in values.items() if not isinstance(v, dict)}}
            for model, values in metrics.items() if model != "comparison"]
    create_table_artifact(table=rows, key="train-compare-metrics",
                          description=f"Test-set metrics of DVC experiment {name} (`dvc exp show`)")
    create_markdown_artifact(markdown=dvc.api.read(str(PATHS.report_md), rev=name), key="train-compare-report",
                             description=f"reports/report.md of DVC experiment {name} "
                                         f"(`dvc exp apply {name}` brings its report.html)")
    return metrics


@flow(name="train-compare", log_prints=True)
def train_compare(overrides: dict[str, Any] | None = None, name: str | None = None) -> dict:
    """Bring every stage up to date in a temporary workspace and record the DVC experiment."""
    run_name = flow_run.get_name() or "local"
    name = name or experiment_name(run_name, datetime.now(UTC))
    env = dict(os.environ, **{RUN_TAG_ENV: run_name, "PREFECT_API_URL": PREFECT_API_URL.value() or ""})
    _stream(exp_run_command(overrides, name), env)
    get_run_logger().info("recorded DVC experiment %s (dvc exp show; dvc exp apply %s)", name, name)
    return {"experiment": name, "metrics": _publish(name)}


def show(name: str) -> Path:
    """Print experiment `name`'s report.md and save its report.html (figures included) under
    .dvc/tmp/, outside the workspace's outputs; returns that file."""
    import dvc.api

    print(dvc.api.read(str(PATHS.report_md), rev=name))
    target = Path(".dvc/tmp/reports") / f"{name}.html"
    write_atomic(target, lambda p: p.write_bytes(dvc.api.read(str(PATHS.report_html), rev=name, mode="rb")))
    print(f"The full report with its figures: {target.resolve().as_uri()}")
    return target


def serve() -> None:
    """Register the deployment (schedule from params.yaml's `deploy`) and execute its runs."""
    deploy = load_params().deploy
    train_compare.serve(
        name=deploy.name,
        cron=deploy.cron if deploy.schedule else None,
        # Runs queue: each would train the same pairs into the same checkpoints on the same cores.
        global_limit=1,
        description=__doc__,
        tags=["dvc", "cifar10"],
    )


def parse_sets(items: list[str]) -> dict[str, Any]:
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
                     help="a params.yaml override for this run (`dvc exp run -S`)")
    run.add_argument("--preset", type=Path, help="a preset file under presets/ (its `set` overrides, "
                                                 "checked against params.yaml; --set values go on top)")
    run.add_argument("--name", help="the experiment's name (default: date, time and the flow run's name)")
    sub.add_parser("serve", help="register the deployment and execute its runs (Ctrl-C stops)")
    shown = sub.add_parser("show", help="print an experiment's report.md and save its report.html")
    shown.add_argument("name")
    args = parser.parse_args()
    if args.action == "serve":
        stage_main(serve)
    elif args.action == "show":
        stage_main(lambda: show(args.name))
    else:
        def run_it() -> None:
            require_dvc()
            overrides = {**(load_preset(args.preset) if args.preset else {}), **parse_sets(args.set)}
            train_compare(overrides, args.name)
        stage_main(run_it)


if __name__ == "__main__":
    main()
