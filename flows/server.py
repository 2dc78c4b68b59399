"""A temporary Prefect server for one command, where none is configured.

Without a server, every `python -m flows.<stage>` process starts Prefect's own temporary server
(about 25 s each here); with one running, a stage's orchestration costs about 2 s. So:

    python -m flows.server run -- dvc repro     # uses $PREFECT_API_URL, or starts one for the command
    python -m flows.server wait URL             # waits until the server at URL answers

A server that outlives a command is Prefect's own: `make server` runs `prefect server start
--background` and `make stop` runs `prefect server stop`, both with PREFECT_HOME=.prefect. The
server keeps its SQLite database in `.prefect/` (git-ignored), so the UI keeps the history. Set
PREFECT_API_DATABASE_CONNECTION_URL to a PostgreSQL URL for production (see docs/).
"""

from __future__ import annotations

import argparse
import os
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


@contextmanager
def prefect_api():
    """The configured server's API URL, or a temporary server's for the duration of the block."""
    api_url = configured_api_url()
    if api_url:
        yield api_url
        return
    started = time.monotonic()
    with running_server() as api_url:
        print(f"Prefect server {api_url} (UI at {api_url[:-4]}) started in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        yield api_url


def run_with_server(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run `command` against the configured server, or a temporary one started for it, with
    `env` added to this process's environment."""
    with prefect_api() as api_url:
        return subprocess.call(command, env=dict(os.environ, **(env or {}), PREFECT_API_URL=api_url))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="run a command with a Prefect server available")
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    wait = sub.add_parser("wait", help="wait until the server at API_URL answers (`prefect server start "
                                       "--background` returns before it does)")
    wait.add_argument("api_url")
    wait.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if args.action == "wait":
        deadline = time.monotonic() + args.timeout
        while not healthy(args.api_url):
            if time.monotonic() > deadline:
                sys.exit(f"error: no Prefect server answered at {args.api_url} within {args.timeout:.0f} s")
            time.sleep(0.5)
        print(f"Prefect server at {args.api_url}; export PREFECT_API_URL={args.api_url}")
        return
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    sys.exit(run_with_server(command))


if __name__ == "__main__":
    main()
