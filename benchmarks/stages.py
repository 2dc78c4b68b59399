"""Each stage of dvc.yaml as its own process, in a fresh copy of the project: what starting it
costs and how much memory it takes, each beside a reference measured in the same run.

    python -m benchmarks.stages [--tiny]

The stages run in dvc.yaml's order with their own `cmd` (as `dvc repro` runs them, without DVC's
bookkeeping, which benchmarks.orchestration_overhead measures) against one Prefect server, on the
quick variant's settings and the full data (`--tiny`: the test projects' slice, 1 epoch).
- start-up: the process's wall time minus its flow run's time (Prefect's "Beginning flow run" and
  "Finished in state" log lines): the interpreter, imports, Prefect's client, teardown; against a
  process that only imports the stage's module;
- peak memory: the largest resident set of the stage's process and of the workers it waited for
  (`getrusage` in a small launcher), against that same import-only process.
Prints a table; never fails on slowness or size.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.orchestration_overhead import fresh_project, stage_seconds
from flows.server import running_server
from tests.integration.project import project_env

# Linux counts a forked child's resident set from the fork on, before it execs: started from this
# (large) process, every command would report at least this process's size. A small launcher
# starts each command instead and reports the largest resident set of what it waited for.
LAUNCHER = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
            "print(f'\\npeak-kib {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}'); sys.exit(code)")


def measured(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall seconds, peak resident MiB of the command and the workers it waited for, output) of
    a command that must succeed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    out, _, peak = done.stdout.rpartition("\npeak-kib ")
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed (exit {done.returncode}):\n{out[-3000:]}")
    return wall, int(peak) / 1024, out


def stage_commands(project: Path) -> dict[str, list[str]]:
    """Each stage's `cmd` from the project's dvc.yaml, in order, run by this interpreter."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    commands = {}
    for name, stage in stages.items():
        words = shlex.split(stage["cmd"])
        commands[name] = [sys.executable if words[0] == "python" else words[0], *words[1:]]
    return commands


def measure(tiny: bool) -> list[dict]:
    """One row per stage: wall, flow time, start-up, peak memory, and the import-only reference."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(home=Path(tmp) / "prefect") as api_url:
        env = dict(project_env(), PREFECT_API_URL=api_url)
        project = fresh_project(Path(tmp) / "project", tiny)
        for stage, command in stage_commands(project).items():
            module = command[command.index("-m") + 1]
            import_wall, import_mib, _ = measured([sys.executable, "-c", f"import {module}"], project, env)
            wall, mib, out = measured(command, project, env)
            flow = stage_seconds(out)
            rows.append({"stage": stage, "wall": wall, "flow": flow, "startup": wall - flow, "peak_mib": mib,
                         "import_wall": import_wall, "import_mib": import_mib, "module": module})
            print(f"{stage:9} wall {wall:6.1f} s, flow {flow:6.1f} s, start-up {wall - flow:5.1f} s "
                  f"(import alone {import_wall:4.1f} s), peak {mib:7.1f} MiB (import alone {import_mib:6.1f})",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the test projects' tiny data, 1 epoch")
    measure(parser.parse_args().tiny)


if __name__ == "__main__":
    main()
