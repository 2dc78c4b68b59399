import shutil

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
