"""The `train-compare` deployment end to end: a server on a free loopback port with its own
PREFECT_HOME (the session fixture), the deployment's executor, and `prefect deployment run
train-compare/<name>` on a tiny data set, each run a `dvc exp run --temp`."""

from __future__ import annotations

import json
import os
import re
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


def start_run(name: str, *options: str) -> str:
    """`prefect deployment run <name>` (without waiting); the id of the flow run it created."""
    done = subprocess.run(["prefect", "deployment", "run", name, *options], env=project_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return re.search(r"UUID: ([0-9a-f-]{36})", done.stdout)[1]


def wait_for(run_id: str, timeout: float = 600):
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(run_id)
            if flow_run.state.is_final():
                return flow_run
            assert time.monotonic() < deadline, f"flow run {run_id} still {flow_run.state.name}"
            time.sleep(2)


def stage_runs(parent: str) -> list[str]:
    """Names of the flows whose runs carry `train-compare:<parent>` (the stages of one run)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"train-compare:{parent}"])))
        return sorted(client.read_flow(r.flow_id).name for r in runs)


def artifact(key: str, run_id: str) -> str:
    """The data of the artifact `key` that flow run `run_id` published."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
    assert found, f"flow run {run_id} published no artifact {key!r}"
    return str(found[0].data)


def test_a_deployment_run_is_a_dvc_experiment_and_leaves_the_workspace_alone(project, executor):
    deploy = load_params(project / "params.yaml").deploy
    name = f"train-compare/{deploy.name}"
    deployment = read_deployment(name)
    assert [s.schedule.cron for s in deployment.schedules] == [deploy.cron]  # weekly retraining
    params_before = (project / "params.yaml").read_bytes()

    run_id = start_run(name, "-p", 'overrides={"train.epochs": 2}')
    flow_run = wait_for(run_id)
    log = (project.parent / "executor.log").read_text()
    assert flow_run.state.is_completed(), log
    recorded = re.findall(r"recorded DVC experiment ([\w.-]+)", log)
    assert len(recorded) == 1 and recorded[0].endswith(flow_run.name)

    # The workspace is as it was: same params.yaml, no dvc.lock, no outputs.
    assert (project / "params.yaml").read_bytes() == params_before
    assert not (project / "dvc.lock").exists() and not (project / "models").exists()
    assert run(project, "git", "status", "--porcelain").strip() == ""
    # The experiment holds the run: its params (with the override) and its metrics.
    import dvc.api

    assert dvc.api.params_show(repo=str(project), rev=recorded[0])["train"]["epochs"] == 2
    metrics = json.loads(dvc.api.read("metrics/evaluate.json", repo=str(project), rev=recorded[0]))
    assert 0 <= metrics["cnn"]["ensemble_acc"] <= 1
    # Every stage reported to the same Prefect API, tagged with the run that started it, and the
    # run published the experiment's metrics and report.
    assert stage_runs(flow_run.name) == ["download", "evaluate", "prepare", "report", "split", "train"]
    assert "CIFAR-10: CNN vs ANN" in artifact("train-compare-report", run_id)
    assert "ensemble_acc" in artifact("train-compare-metrics", run_id)


def test_runs_queue_and_wait_for_a_held_workspace_lock(project, executor):
    """Two runs at once queue (the deployment's concurrency limit is 1: they would train the same
    pairs on the same cores), each in its own temporary workspace; a DVC lock held in the
    workspace (as `dvc repro` holds it between stages) only delays them."""
    name = f"train-compare/{load_params(project / 'params.yaml').deploy.name}"
    read_deployment(name)
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom dvc.repo import Repo\n"
                               "r = Repo('.'); r.lock.lock(); print('locked', flush=True); time.sleep(15)"],
                              cwd=project, env=project_env(), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    first, second = start_run(name), start_run(name, "-p", 'overrides={"train.models": ["ann"]}')
    runs = sorted((wait_for(first), wait_for(second)), key=lambda r: r.start_time)
    holder.wait()
    log = (project.parent / "executor.log").read_text()
    assert all(r.state.is_completed() for r in runs), log
    assert runs[0].end_time <= runs[1].start_time  # one after the other
    # Each temporary workspace took the data from DVC's cache and the finished folds from the
    # project's checkpoints: nothing was downloaded, decoded or trained again.
    later = log[log.index(f"Flow run '{runs[1].name}'"):]
    assert "Stage 'prepare' is cached - skipping run" in later and "finished earlier" in later
    assert len(set(re.findall(r"recorded DVC experiment ([\w.-]+)", log))) >= 2


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


def test_a_run_outside_the_deployment_and_its_report(project, prefect_server):
    """What `make quick` does: one `train_compare run` (a `dvc exp run --temp`), then `show`,
    which prints the experiment's report and saves its HTML outside the workspace's outputs."""
    run(project, sys.executable, "-m", "flows.train_compare", "run", "--name", "quick-check",
        "--set", "train.models=[ann]")
    assert run(project, "git", "status", "--porcelain").strip() == ""  # nothing to commit by mistake
    assert not (project / "dvc.lock").exists()  # and a plain `dvc repro` is not half done
    shown = run(project, sys.executable, "-m", "flows.train_compare", "show", "quick-check")
    assert "# CIFAR-10: CNN vs ANN — evaluation report" in shown and "| ANN" in shown
    html = project / ".dvc" / "tmp" / "reports" / "quick-check.html"
    assert html.read_text().count("data:image/png;base64,") >= 3


def test_a_killed_run_leaves_the_workspace_as_it_was(project, prefect_server):
    """A run killed mid-way (SIGKILL, a lost machine) with overrides applied: they were applied in
    its temporary workspace only, so params.yaml is intact and the next run simply runs."""
    params_before = (project / "params.yaml").read_bytes()
    process = subprocess.Popen([sys.executable, "-m", "flows.train_compare", "run", "--name", "killed",
                                "--set", "train.epochs=3", "--set", "evaluate.tta_flip=false"], cwd=project,
                               env=project_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for line in process.stdout:
        if "Running stage 'train'" in line or "Stage 'train' is cached" in line:
            break
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert (project / "params.yaml").read_bytes() == params_before
    assert run(project, "git", "status", "--porcelain").strip() == ""
    run(project, sys.executable, "-m", "flows.train_compare", "run", "--name", "after-the-kill",
        "--set", "train.epochs=3", "--set", "evaluate.tta_flip=false")
    assert "after-the-kill" in run(project, "dvc", "exp", "list", "--name-only")
