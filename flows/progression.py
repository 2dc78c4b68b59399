"""The study's progression as queued DVC experiments (steps: presets/progression.yaml).

    python -m flows.progression run [--fast] [--jobs N]    # queue every step, run the queue, print the table
    python -m flows.progression queue [--fast] [--set KEY=VALUE ...]   # only queue them
    dvc exp run --run-all --jobs 1                         # DVC runs the queue (or: dvc queue start)
    dvc queue status                                       # what is queued, running, done
    python -m flows.progression table [--fast]             # one row per step, also into progression/results.json
    python -m flows.progression history                    # every run of the default recipe, oldest first

Each step is `dvc exp run --queue --name <prefix>-<step> -S ...`: DVC runs it later in a temporary
copy of the repository, restores the stages its cache already holds (the data stages, so nothing
is downloaded or decoded again) and records a named experiment. `--fast` adds the steps file's
`fast` overrides to every step (a CPU-sized budget) and names the experiments `fast-<step>`;
`--set` adds more. The table reads each experiment's metrics files with `dvc.api`. `run` gives
the queue one Prefect server (the configured one, or a temporary one): without it every stage of
every experiment would start its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from flows.common import CPUS_ENV, PATHS, available_cpus, stage_main
from flows.server import prefect_api
from flows.train_compare import exp_run_command, parse_sets, require_dvc
from tasks import progression
from tasks.config import PARAMS_FILE
from tasks.flops import forward_flops
from tasks.io import write_json

PREFIX, FAST_PREFIX = "progression", "fast"


def costliest_first(steps: list[progression.Step]) -> list[progression.Step]:
    """The steps in the order to queue them: the costliest model first (forward FLOPs per image),
    file order among equals. DVC's workers take experiments in queue order, so with `--jobs 2` the
    slowest experiment (ResNet-18) starts at once on one worker while the other works through the
    rest, instead of starting halfway and running on alone at the end."""
    cost = {model: forward_flops(model) for model in {step.model for step in steps}}
    return sorted(steps, key=lambda step: -cost[step.model])


def replace_earlier(names: list[str]) -> None:
    """Remove the experiments of these names that the current commit already has. DVC refuses to
    save a re-run whose results differ from an earlier experiment of the same name and baseline
    (ExperimentExistsError), and says so only after the experiment has trained."""
    done = subprocess.run(["dvc", "exp", "ls", "--name-only"], capture_output=True, text=True)
    earlier = sorted(set(done.stdout.split()) & set(names))
    if earlier:
        print(f"replacing {len(earlier)} earlier experiments of this commit: {', '.join(earlier)}", flush=True)
        if subprocess.run(["dvc", "exp", "remove", *earlier]).returncode:
            raise progression.ProgressionError("`dvc exp remove` failed (its message is above)")


def queue(prefix: str, extra: dict[str, Any], steps_file: Path = progression.STEPS_FILE) -> list[str]:
    """Queue one experiment per step, the costliest first, replacing this commit's earlier
    experiments of the same names; returns their names."""
    require_dvc()
    steps = costliest_first(progression.load_steps(steps_file))
    replace_earlier([progression.experiment_name(prefix, step) for step in steps])
    names = []
    for step in steps:
        name = progression.experiment_name(prefix, step)
        command = exp_run_command({**step.overrides, **extra}, name, queue=True)
        print("$", " ".join(command), flush=True)
        if subprocess.run(command).returncode:
            raise progression.ProgressionError(f"{name}: `dvc exp run --queue` failed (its message is above)")
        names.append(name)
    print(f"queued {len(names)} experiments")
    return names


def job_env(jobs: int, cpus: int) -> dict[str, str]:
    """What each of `jobs` parallel experiments may use: its share of the cores ($PIPELINE_CPUS,
    read by the train and evaluate stages), so that together they do not oversubscribe them."""
    return {CPUS_ENV: str(max(1, cpus // jobs))}


def queue_state(status: str) -> tuple[int, int]:
    """(experiments still queued, active workers) from the text of `dvc queue status`."""
    queued = sum(1 for line in status.splitlines() if line.split()[-1:] == ["Queued"])
    workers = re.search(r"Worker status: (\d+) active", status)
    return queued, int(workers[1]) if workers else 0


def keep_workers(jobs: int, status: Callable[[], str], start: Callable[[], object], stop: threading.Event,
                 every: float = 60) -> None:
    """Until `stop` is set, every `every` seconds: while experiments wait and fewer than `jobs`
    workers run, start workers again. DVC's queue workers share a broker of files, and with
    several of them one can read a message another is still writing and stop (JSONDecodeError in
    .dvc/tmp/exps/celery/dvc-exp-worker-*.out; treeverse/dvc#10428), leaving the rest of the queue
    to fewer workers than asked for."""
    while not stop.wait(every):
        queued, active = queue_state(status())
        if queued and active < jobs:
            print(f"{active} of {jobs} queue workers left with {queued} experiments waiting: "
                  f"`dvc queue start --jobs {jobs}`", flush=True)
            start()


def run_queue(jobs: int) -> None:
    """Run every queued experiment, `jobs` at a time, and wait for them (DVC follows their logs)."""
    command = ["dvc", "exp", "run", "--run-all", "--jobs", str(jobs)]
    env = job_env(jobs, available_cpus())
    print("$", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(command), flush=True)
    with prefect_api() as api_url:
        environment = dict(os.environ, **env, PREFECT_API_URL=api_url)
        stop = threading.Event()
        watcher = threading.Thread(target=keep_workers, daemon=True, args=(
            jobs, lambda: subprocess.run(["dvc", "queue", "status"], env=environment, capture_output=True,
                                         text=True).stdout,
            # not captured: the workers it starts would hold the pipe open until they end
            lambda: subprocess.run(["dvc", "queue", "start", "--jobs", str(jobs)], env=environment,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), stop))
        if jobs > 1:
            watcher.start()
        try:
            code = subprocess.call(command, env=environment)
        finally:
            stop.set()
    if code:
        raise progression.ProgressionError(f"`{' '.join(command)}` failed: see the experiments' logs above")


def _experiment_files(name: str) -> tuple[dict | None, dict | None, dict | None]:
    """An experiment's evaluation and training metrics and its params.yaml, or None for what it
    does not have."""
    import dvc.api  # imported here: queuing does not need it

    out = []
    for path, parse in ((PATHS.eval_metrics, json.loads), (PATHS.train_metrics, json.loads),
                        (PARAMS_FILE, yaml.safe_load)):
        try:
            out.append(parse(dvc.api.read(str(path), rev=name)))
        except Exception:  # no such experiment (not run yet, failed, removed): a "not run" row
            out.append(None)
    return tuple(out)


def collect(prefix: str, steps_file: Path = progression.STEPS_FILE):
    steps = progression.load_steps(steps_file)
    results = {s.name: progression.step_result(s, *_experiment_files(progression.experiment_name(prefix, s)))
               for s in steps}
    return progression.progression_table(steps, results)


def _lock_at(rev: str) -> dict | None:
    from dvc.utils.serialize import parse_yaml  # DVC's own reader (YAML 1.2), as DVC reads dvc.lock

    done = subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=PATHS.root, capture_output=True, text=True)
    return parse_yaml(done.stdout, "dvc.lock") if done.returncode == 0 else None


def history():
    command = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--all-commits", "--no-fetch"]
    done = subprocess.run(command, cwd=PATHS.root, capture_output=True, text=True)
    if done.returncode:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise progression.ProgressionError(f"`dvc exp show` failed: {reason}")
    return progression.retraining_history(json.loads(done.stdout),
                                          str(PATHS.eval_metrics), _lock_at)


def print_table(prefix: str, steps_file: Path) -> None:
    """Print the progression table and write it, with the retraining history, to
    progression/results.json (the report's "Progression" section reads that file)."""
    table = collect(prefix, steps_file)
    print(progression.format_table(table).to_markdown(index=False))
    record = progression.results_record(table, history(), prefix, pd.Timestamp.now(tz="UTC").floor("s"))
    write_json(PATHS.progression_results, record)
    print(f"wrote {PATHS.progression_results}: commit it, then `dvc repro report` shows it in the report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    ran = sub.add_parser("run", help="queue every step, run the queue and print the table")
    ran.add_argument("--jobs", type=int, default=1, help="experiments at a time, each with its share of the "
                                                          "cores (default 1: on a CPU, one experiment's training "
                                                          "already uses every core; --fast: 2, a core each)")
    queued = sub.add_parser("queue", help="queue one DVC experiment per step")
    table = sub.add_parser("table", help="collect the experiments' metrics into the progression table")
    for command in (ran, queued, table):
        command.add_argument("--fast", action="store_true", help="the fast variant: the steps file's `fast` "
                                                                 f"overrides on every step, prefix {FAST_PREFIX!r}")
        command.add_argument("--prefix", help=f"experiment names' prefix (default {PREFIX!r}, or "
                                              f"{FAST_PREFIX!r} with --fast)")
        command.add_argument("--steps", type=Path, default=progression.STEPS_FILE, help="the steps file")
    for command in (ran, queued):
        command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                             help="an override added to every step (`dvc exp run -S`)")
    sub.add_parser("history", help="every recorded run of the default recipe, oldest first")
    args = parser.parse_args()
    if args.action == "history":
        stage_main(lambda: print(history().to_markdown(index=False)))
        return
    prefix = args.prefix or (FAST_PREFIX if args.fast else PREFIX)

    def overrides() -> dict[str, Any]:
        return {**(progression.load_fast(args.steps) if args.fast else {}), **parse_sets(args.set)}

    if args.action == "queue":
        stage_main(lambda: queue(prefix, overrides(), args.steps))
    elif args.action == "table":
        stage_main(lambda: print_table(prefix, args.steps))
    else:
        def everything() -> None:
            started = time.monotonic()
            queue(prefix, overrides(), args.steps)
            run_queue(args.jobs)
            print(f"the queue ran in {time.monotonic() - started:.0f} s")
            print_table(prefix, args.steps)
        stage_main(everything)


if __name__ == "__main__":
    main()
