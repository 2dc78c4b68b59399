"""The `train-compare` deployment end to end: a server on a free loopback port with its own
PREFECT_HOME (the session fixture), the deployment's executor, and
`prefect deployment run train-compare/<name> --watch` on a tiny data set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tasks.config import load_params
from tests.integration.project import make_project, project_env, run


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("deployed"))


@pytest.fixture
def executor(prefect_server, project):
    """`python -m flows.train_compare serve` in the project, stopped (whole group) afterwards."""
    log = open(project.parent / "executor.log", "w")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "flows.train_compare", "serve"], cwd=project,
                               env=project_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield process
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    log.close()


def read_deployment(name: str, timeout: float = 90):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                assert time.monotonic() < deadline, f"deployment {name} was never registered"
                time.sleep(1)


def test_deployment_run_matches_dvc_repro(project, executor):
    deploy = load_params(project / "params.yaml").deploy
    name = f"train-compare/{deploy.name}"
    deployment = read_deployment(name)
    assert [s.schedule.cron for s in deployment.schedules] == [deploy.cron]  # weekly retraining

    done = subprocess.run(["prefect", "deployment", "run", name, "--watch", "--watch-timeout", "600"],
                          cwd=project, env=project_env(), capture_output=True, text=True, timeout=660)
    log = (project.parent / "executor.log").read_text()
    assert done.returncode == 0 and "Completed" in done.stdout, done.stdout + done.stderr + log
    assert (project / "metrics/train.json").exists() and (project / "models/cnn/fold_1/weights.pt").exists()
    assert "Data and pipelines are up to date" in run(project, "dvc", "status")
    assert "recorded DVC experiment" in log
    assert "fresh interpreter" not in log  # the run forked from the preloaded modules (flows/forkserver.py)
    assert run(project, "dvc", "exp", "list", "--name-only").strip()  # the run is a DVC experiment

    # A second run with nothing changed trains nothing.
    again = subprocess.run(["prefect", "deployment", "run", name, "--watch", "--watch-timeout", "300"],
                           cwd=project, env=project_env(), capture_output=True, text=True, timeout=360)
    assert again.returncode == 0
    assert "every stage was up to date: nothing ran" in (project.parent / "executor.log").read_text()


def test_the_schedule_can_be_switched_off(project, prefect_server):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["deploy"].update(schedule=False, name="on-demand")
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    process = subprocess.Popen([sys.executable, "-m", "flows.train_compare", "serve"], cwd=project,
                               env=project_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        assert read_deployment("train-compare/on-demand").schedules == []
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        run(project, "git", "checkout", "params.yaml")


def test_concurrent_runs_do_not_share_the_repository(project, prefect_server):
    from tasks import pipeline

    cwd = os.getcwd()
    os.chdir(project)
    try:
        with pipeline.locked_repo():
            blocked = subprocess.run(["dvc", "repro"], cwd=project, env=project_env(), capture_output=True,
                                     text=True)
    finally:
        os.chdir(cwd)
    assert blocked.returncode != 0 and "Unable to acquire lock" in blocked.stderr
