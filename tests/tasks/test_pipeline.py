import os
import shutil
import signal
import subprocess
import sys

import pytest

from tasks import pipeline
from tasks.config import ParamsError
from tests.conftest import ROOT


@pytest.fixture
def params_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc" / "tmp").mkdir(parents=True)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path / "params.yaml"


def test_overrides_apply_inside_the_block_and_keep_comments(params_file):
    original = params_file.read_text()
    with pipeline.overridden_params({"train.epochs": 3, "train.models": ["ann"]}, params_file):
        changed = params_file.read_text()
        assert "epochs: 3 " in changed and "# maximum epochs per fold" in changed
        assert "models: [ann]" in changed or "- ann" in changed
    assert params_file.read_text() == original


def test_the_original_comes_back_after_an_error(params_file):
    original = params_file.read_text()
    with pytest.raises(RuntimeError), pipeline.overridden_params({"train.epochs": 3}, params_file):
        raise RuntimeError("stage failed")
    assert params_file.read_text() == original


@pytest.mark.parametrize(("overrides", "error", "message"), [
    ({"train.epoch": 3}, KeyError, "no key 'train.epoch'"),
    ({"training.epochs": 3}, KeyError, "no section 'training'"),
    ({"train.epochs": -1}, ParamsError, "train.epochs = -1"),
])
def test_bad_overrides_touch_nothing(params_file, overrides, error, message):
    original = params_file.read_text()
    with pytest.raises(error, match=message), pipeline.overridden_params(overrides, params_file):
        pass
    assert params_file.read_text() == original


def test_stage_module_from_command():
    assert pipeline.stage_module("python -m flows.train") == "flows.train"
    with pytest.raises(ValueError, match="is not 'python -m flows.<stage>'"):
        pipeline.stage_module("bash train.sh")


def test_plan_follows_dvc_yaml_dependencies(monkeypatch):
    monkeypatch.chdir(ROOT)
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        order = [stage.addressing for stage in pipeline.plan(repo)]
    assert order.index("download") < order.index("prepare") < order.index("split") < order.index("train")


def test_a_run_killed_with_overrides_applied_is_undone_by_the_next(params_file, capsys):
    original = params_file.read_text()
    script = ("import sys, time\nfrom pathlib import Path\nfrom tasks import pipeline\n"
              "with pipeline.overridden_params({'train.epochs': 3}, Path('params.yaml')):\n"
              "    print('overridden', flush=True)\n    time.sleep(60)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=params_file.parent, stdout=subprocess.PIPE,
                               text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert process.stdout.readline().strip() == "overridden"
    with pytest.raises(RuntimeError, match="params.yaml: another train-compare run is using it"), \
            pipeline.overridden_params(None, params_file):
        pass  # while the first run lives, a second one must not touch the file
    assert not pipeline.restore_interrupted_params(params_file)
    os.kill(process.pid, signal.SIGKILL)  # a lost machine: no `finally` runs
    process.wait()
    assert params_file.read_text() != original  # what the killed run left behind

    with pipeline.overridden_params(None, params_file):  # the next run
        assert params_file.read_text() == original
    assert "params.yaml: restored from" in capsys.readouterr().out
    assert not list((params_file.parent / ".dvc" / "tmp").glob("*.keep"))


def test_the_executor_restores_a_killed_runs_params_at_start(params_file, capsys):
    original = params_file.read_text()
    backup = params_file.parent / ".dvc" / "tmp" / "params.yaml.keep"
    backup.write_text(original)
    params_file.write_text(original.replace("epochs: 13", "epochs: 3"))
    assert pipeline.restore_interrupted_params(params_file)
    assert params_file.read_text() == original and "restored from" in capsys.readouterr().out
    assert not pipeline.restore_interrupted_params(params_file)  # nothing left to restore
