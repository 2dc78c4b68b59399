import pytest
import yaml

from flows.train_compare import exp_run_command, parse_sets
from tasks.presets import PresetError, apply, load_preset, resolve
from tasks.provenance import flatten
from tests.conftest import ROOT

STUDY = ROOT / "presets" / "study.yaml"
PARAMS = ROOT / "params.yaml"

# What the study's notebook ran (issue 15), independent of how presets/study.yaml spells it.
STUDY_PROTOCOL = {
    "base.seed": 42, "split.holdout": 0.2, "split.folds": 5, "split.subsample": 1.0,
    "split.imbalance": 1.0, "split.balancing": "none",
    "train.models": ("cnn",), "train.dropout": True, "train.l2": 0.001, "train.label_smoothing": 0.0,
    "train.optimizer": "adam", "train.lr": 0.001, "train.weight_decay": 0.0, "train.batch_size": 32,
    "train.epochs": 50, "train.schedule": "plateau", "train.plateau_factor": 0.5,
    "train.plateau_patience": 3, "train.min_lr": 1e-6, "train.patience": 5,
    "train.input_scaling": "divide255",
    "augment.enabled": True, "augment.rotation": 20, "augment.shift": 0.2, "augment.shear": 0.2,
    "augment.zoom": 0.2, "augment.hflip": True, "augment.fill": "nearest", "augment.crop_padding": 0,
}


def test_the_study_preset_resolves_to_every_value_of_the_studys_protocol():
    resolved = flatten(resolve(load_preset(STUDY)).model_dump())
    assert {key: resolved[key] for key in STUDY_PROTOCOL} == STUDY_PROTOCOL


def test_the_preset_travels_as_dvc_set_params_that_read_back_to_the_same_values():
    overrides = load_preset(STUDY)
    command = exp_run_command(overrides, "study-x")
    sets = [command[i + 1] for i, arg in enumerate(command) if arg == "--set-param"]
    assert len(sets) == len(overrides)
    # What DVC receives, read back as DVC reads it (YAML values), resolves to the same parameters.
    assert resolve(parse_sets(sets)) == resolve(overrides)
    assert resolve(parse_sets(sets)).split.holdout == 0.2


def test_apply_replaces_only_the_named_keys_and_leaves_its_input_alone():
    raw = yaml.safe_load(PARAMS.read_text())
    out = apply(raw, {"train.lr": 0.5, "split.folds": 3})
    assert out["train"]["lr"] == 0.5 and out["split"]["folds"] == 3
    assert raw["train"]["lr"] != 0.5
    changed = {k for k, v in flatten(out).items() if flatten(raw)[k] != v}
    assert changed == {"train.lr", "split.folds"}


@pytest.mark.parametrize(("text", "expected"), [
    ("set: {train.learning_rate: 0.1}\n", "train.learning_rate: no such key in"),
    ("set: {train.lr: -1}\n", "train.lr = -1"),
    ("set: {split.holdout: 1.5}\n", "split.holdout = 1.5"),
    ("train.lr: 0.1\n", "expected one mapping 'set'"),
    ("set: [1, 2\n", "not valid YAML"),
])
def test_a_bad_preset_is_refused_naming_the_file_and_the_key(tmp_path, text, expected):
    preset = tmp_path / "bad.yaml"
    preset.write_text(text)
    with pytest.raises(PresetError) as error:
        load_preset(preset, PARAMS)
    assert str(preset) in str(error.value) and expected in str(error.value)


def test_a_missing_preset_is_one_line(tmp_path):
    with pytest.raises(PresetError, match="cannot read the preset"):
        load_preset(tmp_path / "nope.yaml")
