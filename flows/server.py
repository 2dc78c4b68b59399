"""A local Prefect server for the pipeline's flows.

Without a server, every `python -m flows.<stage>` process starts Prefect's temporary server
(about 25 s each here); with one running, a stage's orchestration costs about 2 s. So:

    python -m flows.server run -- dvc repro     # uses $PREFECT_API_URL, or starts one for the command
    python -m flows.server start [--background] # a server on 127.0.0.1:4200
    python -m flows.server worker               # the train-compare deployment's executor, in the background
    python -m flows.server stop                 # stop what --background and worker started

The server keeps its SQLite database in `.prefect/` (git-ignored), so the UI keeps the history.
Set PREFECT_API_DATABASE_CONNECTION_URL to a PostgreSQL URL for production (see docs/).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

HOME = Path(".prefect")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def configured_api_url() -> str:
    """The API URL from the environment or the active Prefect profile ("" = none)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from prefect.settings import PREFECT_API_URL  # slow import, only when the env says nothing

    return PREFECT_API_URL.value() or ""


def server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home.resolve()))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_UI_ENABLED", "true")
    return env


@contextmanager
def running_server(home: Path = HOME, port: int | None = None, timeout: float = 120):
    """Start `prefect server start` on loopback, yield its API URL, stop it on exit."""
    port = port or free_port()
    api_url = f"http://{HOST}:{port}/api"
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")  # noqa: SIM115 (closed in the finally below)
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port)],
        env=server_env(home), stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while not healthy(api_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield api_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def run_with_server(command: list[str]) -> int:
    """Run `command` against the configured server, or a temporary one started for it."""
    api_url = configured_api_url()
    if api_url:
        return subprocess.call(command, env=dict(os.environ, PREFECT_API_URL=api_url))
    started = time.monotonic()
    with running_server() as api_url:
        print(f"Prefect server {api_url} (UI at {api_url[:-4]}) started in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        return subprocess.call(command, env=dict(os.environ, PREFECT_API_URL=api_url))


def start_background(name: str, command: list[str], env: dict[str, str], home: Path = HOME) -> int:
    """Start `command` in its own session, logging to `.prefect/<name>.log`; remember its pid."""
    home.mkdir(parents=True, exist_ok=True)
    pid_file = home / f"{name}.pid"
    if pid_file.exists() and _alive(int(pid_file.read_text())):
        raise RuntimeError(f"{name} already runs (pid {pid_file.read_text()}); `make stop` stops it")
    with open(home / f"{name}.log", "ab") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    pid_file.write_text(str(process.pid))
    return process.pid


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_background(home: Path = HOME, timeout: float = 30) -> list[str]:
    """Stop every process `start_background` started (its whole process group), politely first."""
    stopped = []
    for pid_file in sorted(home.glob("*.pid")):
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.killpg(pid, signal.SIGKILL)
            stopped.append(pid_file.stem)
        pid_file.unlink()
    return stopped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command with a Prefect server available")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    start = sub.add_parser("start", help="a server on 127.0.0.1 (foreground unless --background)")
    start.add_argument("--port", type=int, default=4200)
    start.add_argument("--background", action="store_true")
    worker = sub.add_parser("worker", help="run the train-compare deployment's executor in the background")
    worker.add_argument("--port", type=int, default=4200)
    sub.add_parser("stop", help="stop the background server and executor")
    args = parser.parse_args()
    if args.action == "run":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        sys.exit(run_with_server(command))
    if args.action == "stop":
        print("stopped: " + (", ".join(stop_background()) or "nothing was running"))
        return
    api_url = f"http://{HOST}:{args.port}/api"
    if args.action == "worker":
        env = dict(os.environ, PREFECT_API_URL=api_url)
        pid = start_background("worker", [sys.executable, "-m", "flows.train_compare", "serve"], env)
        print(f"train-compare executor started (pid {pid}, log {HOME / 'worker.log'})")
        return
    if args.background:
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(args.port)]
        start_background("server", command, server_env(HOME))
        deadline = time.monotonic() + 120
        while not healthy(api_url):
            if time.monotonic() > deadline:
                sys.exit(f"Prefect server did not answer; see {HOME / 'server.log'}")
            time.sleep(0.5)
        print(f"Prefect server at {api_url} (UI http://{HOST}:{args.port}); "
              f"export PREFECT_API_URL={api_url}")
        return
    with running_server(port=args.port) as api_url:
        print(f"Prefect server at {api_url}; export PREFECT_API_URL={api_url}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
