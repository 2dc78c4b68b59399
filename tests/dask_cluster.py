"""A real Dask cluster for tests: `dask scheduler` and `dask worker` processes on 127.0.0.1, each
worker in an empty folder of its own and without PYTHONPATH, so that it can import the project
only as an installed package and read nothing of the project's files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DASK = str(Path(sys.executable).with_name("dask"))


class Cluster:
    def __init__(self, root: Path, workers: int = 2):
        self.root, self.count = root, workers
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        folder = self.root / name
        folder.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 - the process owns it until stop()
        process = subprocess.Popen([DASK, *args], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def __enter__(self) -> Cluster:
        scheduler_file = self.root / "scheduler.json"
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)])
        self._wait(scheduler_file.exists, "the scheduler file")
        self.address = json.loads(scheduler_file.read_text())["address"]
        for i in range(self.count):
            self._start(f"worker-{i}", ["worker", self.address, "--nthreads", "1", "--no-nanny",
                                        "--host", "127.0.0.1", "--name", f"worker-{i}"])
        self._wait(lambda: self.log("scheduler").count("Register worker") >= self.count, "the workers")
        return self

    def _wait(self, ready, what: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout} s:\n{self.log('scheduler')}")
            time.sleep(0.1)

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text()

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def __exit__(self, *exc) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
