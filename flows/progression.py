"""The study's progression as queued DVC experiments (steps: presets/progression.yaml).

    python -m flows.progression queue [--prefix P] [--set KEY=VALUE ...]   # one queued experiment per step
    dvc queue start --jobs 1                                               # DVC runs the queue
    dvc queue status                                                       # what is queued, running, done
    python -m flows.progression table [--prefix P]                         # one row per step

Each step is `dvc exp run --queue --name <prefix>-<step> -S ...`: DVC runs it later in a temporary
copy of the repository, restores the stages its cache already holds (the data stages, so nothing
is downloaded or decoded again) and records a named experiment. `--set` adds overrides to every
step (a smaller budget, say). The table reads each experiment's metrics files with `dvc.api`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from flows.common import PATHS, stage_main
from flows.train_compare import exp_run_command, parse_sets
from tasks import progression

PREFIX = "progression"


def queue(prefix: str, extra: dict[str, Any]) -> list[str]:
    """Queue one experiment per step; returns their names."""
    names = []
    for step in progression.load_steps():
        name = progression.experiment_name(prefix, step)
        command = exp_run_command({**step.overrides, **extra}, name, queue=True)
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        names.append(name)
    print(f"queued {len(names)} experiments: run them with `dvc queue start --jobs 1`, "
          f"then `python -m flows.progression table --prefix {prefix}`")
    return names


def _metrics(name: str) -> tuple[dict | None, dict | None]:
    """An experiment's evaluation and training metrics, or None for what it does not have."""
    import dvc.api  # imported here: queuing does not need it

    out = []
    for path in (PATHS.eval_metrics, PATHS.train_metrics):
        try:
            out.append(json.loads(dvc.api.read(str(path), rev=name)))
        except Exception:  # no such experiment (not run yet, failed, removed): a "not run" row
            out.append(None)
    return out[0], out[1]


def collect(prefix: str):
    steps = progression.load_steps()
    results = {s.name: progression.step_result(s, *_metrics(progression.experiment_name(prefix, s))) for s in steps}
    return progression.progression_table(steps, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    queued = sub.add_parser("queue", help="queue one DVC experiment per step")
    queued.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override added to every step (`dvc exp run -S`)")
    table = sub.add_parser("table", help="collect the experiments' metrics into the progression table")
    for command in (queued, table):
        command.add_argument("--prefix", default=PREFIX, help=f"experiment names' prefix (default {PREFIX})")
    args = parser.parse_args()
    if args.action == "queue":
        stage_main(lambda: queue(args.prefix, parse_sets(args.set)))
    else:
        stage_main(lambda: print(progression.format_table(collect(args.prefix)).to_markdown(index=False)))


if __name__ == "__main__":
    main()
