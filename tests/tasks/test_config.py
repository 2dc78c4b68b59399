import copy
import re
import subprocess
import sys

import pytest

from tasks.config import ParamsError, load_params, parse_params
from tests.conftest import ROOT


def test_params_yaml_loads_into_typed_sections():
    params = load_params(ROOT / "params.yaml")
    assert params.split.folds == 5
    assert params.train.models == ("ann", "cnn")
    assert params.split.balancing == "oversample"


def _break(raw, section, key, value):
    raw = copy.deepcopy(raw)
    raw[section][key] = value
    return raw


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("split", "folds", 1, "split.folds = 1"),
    ("train", "lr", -0.1, "train.lr = -0.1"),
    ("split", "imbalance", 0, "split.imbalance = 0"),
    ("split", "imbalance", 1.5, "split.imbalance = 1.5"),
    ("train", "epochs", "many", "train.epochs = 'many'"),
    ("split", "balancing", "smote", "split.balancing = 'smote'"),
    ("data", "checksum", "md5:xyz", "data.checksum = 'md5:xyz'"),
])
def test_impossible_values_name_key_and_value(raw_params, section, key, value, words):
    with pytest.raises(ParamsError, match="params.yaml") as error:
        parse_params(_break(raw_params, section, key, value), "params.yaml")
    assert words in str(error.value)


def test_unknown_model_lists_the_valid_ones():
    from tasks.models import check_names

    with pytest.raises(ParamsError) as error:
        check_names(["cnn", "transformer"])
    message = str(error.value)
    assert message.startswith("params.yaml: invalid parameters")
    assert "train.models = ['cnn', 'transformer']" in message and "['transformer']" in message
    assert "resnet18" in message and "cnn_blog" in message
    check_names(["ann", "cnn"])  # registered names pass


def test_reading_params_does_not_import_torch():
    """Every stage reads params.yaml; only the ones that need torch should pay its import."""
    code = ("import sys\nfrom tasks.config import load_params\nload_params()\n"
            "print(sorted(m for m in ('torch', 'tasks.models') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_model_listed_twice(raw_params):
    with pytest.raises(ParamsError, match=re.escape("train.models = ['cnn', 'cnn']: Value error, lists a model twice")):
        parse_params(_break(raw_params, "train", "models", ["cnn", "cnn"]))


def test_unknown_key_is_an_error(raw_params):
    raw = _break(raw_params, "train", "learning_rate", 0.1)
    with pytest.raises(ParamsError, match="train.learning_rate: unknown key"):
        parse_params(raw)


def test_missing_section_is_an_error(raw_params):
    raw = copy.deepcopy(raw_params)
    del raw["augment"]
    with pytest.raises(ParamsError, match="augment: missing"):
        parse_params(raw)


def test_config_is_frozen(params):
    with pytest.raises(ValueError):
        params.train.lr = 1.0


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="no such parameter file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: [unclosed")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(bad)


def test_tune_space_names_real_keys_and_valid_ranges(raw_params):
    params = parse_params(raw_params)
    assert params.tune.space["train.lr"].log and params.tune.space["train.batch_size"].choices
    for space, words in [
        ({"train.speed": {"low": 0, "high": 1}}, "'train.speed': not a key of the train or augment section"),
        ({"train.parallel": {"choices": [1, 2]}}, "decides how training runs"),
        ({"train.lr": {"low": 0.1, "high": 0.01}}, "needs `low` < `high`"),
        ({"train.lr": {"low": 0, "high": 0.1, "log": True}}, "needs `low` > 0"),
        ({"train.lr": {"low": 0.01, "high": 0.1, "choices": [0.1]}}, "not both"),
    ]:
        raw = copy.deepcopy(raw_params)
        raw["tune"]["space"] = space
        with pytest.raises(ParamsError, match="tune.space") as error:
            parse_params(raw, "params.yaml")
        assert words in str(error.value), str(error.value)
