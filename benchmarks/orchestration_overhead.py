"""Orchestration overhead of the quick variant, three ways, each in a fresh copy of the project:

  deployment        `prefect deployment run train-compare/<name> --watch` (server + executor running):
                    the run is a `dvc exp run --temp`, each stage its own process
  repro+server      `dvc repro` with a Prefect server running (what `make repro` does)
  repro, no server  `dvc repro` with no server: each stage process starts Prefect's temporary one

    python -m benchmarks.orchestration_overhead [--tiny] [--modes deployment repro+server]

Overhead = wall time - the stages' own compute, where compute is the sum of the stage flows' run
times, read from the timestamps of Prefect's "Beginning flow run" and "Finished in state" log
lines. The deployment's wall time runs from the `prefect deployment run` command to the run's
Completed state; the CLI exits about 3 s later (it waits for late log lines), printed apart with
the rest of the run's timeline. Prints a table; never fails on slowness. `--tiny` runs on the test
projects' slice (12 images per class and split, 1 epoch) instead of the quick variant on the full
data: a fast check, and what the benchmark suite's quick mode measures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from flows.server import running_server
from tests.integration.project import make_project, project_env

STAGE_FLOWS = {"download", "prepare", "split", "train", "evaluate", "report"}
MODES = ("deployment", "repro+server", "repro, no server")
ROOT = Path(__file__).parents[1]


def quick_overrides() -> dict[str, object]:
    """The quick variant's `-S key=value` settings, read from the Makefile (their one home)."""
    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(line for line in makefile.splitlines() if line.startswith("QUICK :="))
    return {key: yaml.safe_load(value) for key, value in re.findall(r"-S ([\w.]+)=(\S+)", line)}


def fresh_project(root: Path, tiny: bool) -> Path:
    project = make_project(root)
    params = yaml.safe_load((project / "params.yaml").read_text())
    if not tiny:  # the quick variant on the real data
        real = yaml.safe_load((ROOT / "params.yaml").read_text())
        params["data"] = real["data"]
        params["data"]["source"] = str((ROOT / real["data"]["source"]).resolve())
        params["train"]["models"] = real["train"]["models"]
        for key, value in quick_overrides().items():
            section, name = key.split(".")
            params[section][name] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-am", "benchmark params"], cwd=project,
                   env=project_env(), check=True)
    return project


_BEGIN = re.compile(r"(\d\d:\d\d:\d\d\.\d+) \| INFO\s+\| Flow run '([\w-]+)' - Beginning (?:sub)?flow run "
                    r"'[\w-]+' for flow '([\w-]+)'")
_END = re.compile(r"(\d\d:\d\d:\d\d\.\d+) \| INFO\s+\| Flow run '([\w-]+)' - Finished in state")


def stage_seconds(log: str) -> float:
    """Sum of the stage flows' run times, from the timestamps of Prefect's own log lines."""
    clock = lambda t: datetime.strptime(t, "%H:%M:%S.%f")  # noqa: E731
    begun = {m[2]: (clock(m[1]), m[3]) for m in _BEGIN.finditer(log)}
    ended = {m[2]: clock(m[1]) for m in _END.finditer(log)}
    return sum((ended[run] - start).total_seconds() for run, (start, flow) in begun.items()
               if flow in STAGE_FLOWS and run in ended)


def timed(command: list[str], project: Path, env: dict) -> tuple[float, str]:
    """(wall seconds, output) of a command that must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started, done.stdout + done.stderr


def _seconds_of_day(clock: str) -> float:
    t = datetime.strptime(clock, "%H:%M:%S.%f")
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def deployment_timeline(log: str, requested: datetime, run_id: str, api_url: str) -> dict[str, float]:
    """Where a deployment run's seconds went, from the executor's log and the run's states."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        states = {s.name: s.timestamp for s in client.read_flow_run_states(run_id)}
    local = lambda ts: ts.astimezone(requested.tzinfo)  # noqa: E731
    at = lambda ts: (local(ts) - requested).total_seconds()  # noqa: E731
    day = _seconds_of_day(requested.strftime("%H:%M:%S.%f"))
    since = lambda clock: (_seconds_of_day(clock) - day) % 86400  # noqa: E731 (log clocks, same day)
    flows = {m[2]: (since(m[1]), m[3]) for m in _BEGIN.finditer(log)}
    ended = {m[2]: since(m[1]) for m in _END.finditer(log)}
    stages = sorted((start, ended[run], flow) for run, (start, flow) in flows.items() if flow in STAGE_FLOWS)
    timeline = {
        "request -> run created": at(states["Scheduled"]),
        "created -> running (executor poll, process start)": at(states["Running"]) - at(states["Scheduled"]),
        f"running -> {stages[0][2]} (dvc exp run: temporary workspace, staleness)":
            stages[0][0] - at(states["Running"]),
    }
    for before, stage in itertools.pairwise(stages):  # DVC saving one stage, a process starting the next
        timeline[f"{before[2]} -> {stage[2]} (dvc.lock, process start)"] = stage[0] - before[1]
    timeline[f"{stages[-1][2]} -> completed (experiment commit, artifacts)"] = (
        at(states["Completed"]) - stages[-1][1])
    timeline["stages (compute)"] = sum(end - start for start, end, _ in stages)
    timeline["completed"] = at(states["Completed"])
    return timeline


def run_deployment(project: Path, env: dict, api_url: str, log_path: Path) -> tuple[float, float, dict]:
    """(wall until the run completed, stage compute, timeline) of one watched deployment run."""
    with open(log_path, "w") as log:
        executor = subprocess.Popen([sys.executable, "-m", "flows.train_compare", "serve"], cwd=project,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(20)  # the executor's start and registration: once per executor, not per run
        name = yaml.safe_load((project / "params.yaml").read_text())["deploy"]["name"]
        requested = datetime.now().astimezone()
        try:
            cli_wall, out = timed(["prefect", "deployment", "run", f"train-compare/{name}", "--watch"],
                                  project, env)
        finally:
            os.killpg(executor.pid, signal.SIGTERM)
            executor.wait(timeout=60)
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out)[1]
    timeline = deployment_timeline(log_path.read_text(), requested, run_id, api_url)
    timeline["completed -> CLI exits (its 3 s wait for late logs)"] = cli_wall - timeline["completed"]
    return timeline["completed"], stage_seconds(log_path.read_text()), timeline


def measure(modes: list[str], tiny: bool) -> list[dict]:
    """One row per mode: wall time, the stages' compute and the overhead (the deployment's timeline
    is printed as it comes)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp, running_server(home=Path(tmp) / "prefect") as api_url:
        served_env = dict(project_env(), PREFECT_API_URL=api_url)
        for i, mode in enumerate(modes):
            project = fresh_project(Path(tmp) / f"project{i}", tiny)
            if mode == "deployment":
                wall, compute, timeline = run_deployment(project, served_env, api_url, Path(tmp) / "executor.log")
                for step, seconds in timeline.items():
                    if step != "completed":
                        print(f"  {step:52} {seconds:6.1f} s", flush=True)
            elif mode == "repro+server":
                wall, out = timed(["dvc", "repro"], project, served_env)
                compute = stage_seconds(out)
            else:
                env = {k: v for k, v in project_env().items() if k != "PREFECT_API_URL"}
                env["PREFECT_HOME"] = str(Path(tmp) / "ephemeral-home")
                wall, out = timed(["dvc", "repro"], project, env)
                compute = stage_seconds(out)
            rows.append({"mode": mode, "wall": wall, "compute": compute, "overhead": wall - compute})
            print(f"{mode}: wall {wall:.1f} s, stage compute {compute:.1f} s, overhead {wall - compute:.1f} s",
                  flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tiny", action="store_true", help="the test projects' tiny data, 1 epoch")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    args = parser.parse_args()
    rows = measure(args.modes, args.tiny)
    print(f"\n{'mode':18} {'wall s':>8} {'compute s':>10} {'overhead s':>11} {'share':>6}")
    for r in rows:
        print(f"{r['mode']:18} {r['wall']:8.1f} {r['compute']:10.1f} {r['overhead']:11.1f} "
              f"{r['overhead'] / r['wall']:6.0%}")


if __name__ == "__main__":
    main()
