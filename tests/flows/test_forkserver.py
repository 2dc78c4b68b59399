"""Deployment runs fork from a forkserver that imported the stage modules once."""

import logging
import multiprocessing
import sys

import yaml

from flows import forkserver
from tasks import pipeline

MARKER_MODULE = "preloaded_marker_for_forkserver_test"  # written to tmp_path: nothing else imports it


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _report_loaded(module: str, queue) -> None:
    queue.put(module in sys.modules)


def test_every_stage_module_is_preloaded():
    stages = yaml.safe_load((forkserver.ROOT / "dvc.yaml").read_text())["stages"]
    modules = {pipeline.stage_module(stage["cmd"]) for stage in stages.values()}
    assert modules <= set(forkserver.preloaded_modules())
    assert "flows.train_compare" in forkserver.preloaded_modules()


def test_the_fingerprint_follows_source_files(tmp_path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "tasks").mkdir()
    source = tmp_path / "tasks" / "train.py"
    source.write_text("EPOCHS = 1\n")
    before = forkserver.source_fingerprint(tmp_path)
    assert forkserver.source_fingerprint(tmp_path) == before
    source.write_text("EPOCHS = 22\n")
    assert forkserver.source_fingerprint(tmp_path) != before
    edited = forkserver.source_fingerprint(tmp_path)
    (tmp_path / "uv.lock").write_text("version = 1\n")  # a new environment
    assert forkserver.source_fingerprint(tmp_path) != edited


def test_runs_fork_from_preloaded_modules_until_the_sources_change(monkeypatch, tmp_path):
    from prefect import flow_engine

    (tmp_path / f"{MARKER_MODULE}.py").write_text("")
    # Python 3.11's forkserver imports its preload list with its own default sys.path (which
    # starts with the working directory, the project root when the executor runs): PYTHONPATH it is.
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setattr(flow_engine, "multiprocessing", multiprocessing)  # put back afterwards
    monkeypatch.setattr(forkserver, "preloaded_modules", lambda: [MARKER_MODULE])
    assert forkserver.use_preloaded_forkserver()

    context = flow_engine.multiprocessing.get_context("spawn")  # what Prefect asks for
    assert context.get_start_method() == "forkserver"
    queue = context.Queue()
    child = context.Process(target=_report_loaded, args=(MARKER_MODULE, queue))
    child.start()
    assert queue.get(timeout=60) is True  # imported before the run was asked for
    child.join(timeout=60)
    assert child.exitcode == 0
    assert flow_engine.multiprocessing.Queue is multiprocessing.Queue  # the rest is untouched

    monkeypatch.setattr(forkserver, "source_fingerprint", lambda: (("tasks/train.py", 1, 1),))
    warnings = Recorder()
    forkserver.logger.addHandler(warnings)  # Prefect's loggers may not propagate to pytest's
    try:
        context = flow_engine.multiprocessing.get_context("spawn")
    finally:
        forkserver.logger.removeHandler(warnings)
    assert context.get_start_method() == "spawn"
    assert any("restart the executor" in r.getMessage() for r in warnings.records)
