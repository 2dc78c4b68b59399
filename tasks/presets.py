"""Presets: named sets of `params.yaml` overrides under presets/, applied without editing it.

A preset file holds one mapping, `set`, of `dvc exp run -S` keys (`train.lr: 0.001`) to values.
`load_preset` reads it and checks it against `params.yaml`: every key must exist there, and the
parameters it resolves to must pass the same validation as `params.yaml` itself, so a typo or an
impossible value stops before a DVC experiment is queued. The overrides then travel as
`--set-param` options of `dvc exp run` (flows/train_compare.py), so a preset run is a DVC
experiment like any other: `dvc exp show` lists it with every resolved value.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tasks.config import PARAMS_FILE, Params, ParamsError, parse_params
from tasks.errors import PipelineError
from tasks.provenance import MISSING, lookup


class PresetError(PipelineError):
    """A preset that cannot be applied; the message names the file, the key and the cause."""


def apply(params: dict, overrides: dict[str, Any]) -> dict:
    """A copy of the raw `params` with each dotted key replaced; a key params.yaml lacks is an error."""
    out = copy.deepcopy(params)
    for key, value in overrides.items():
        if lookup(params, key) is MISSING:
            raise KeyError(key)
        *sections, leaf = key.split(".")
        node = out
        for section in sections:
            node = node[section]
        node[leaf] = value
    return out


def resolve(overrides: dict[str, Any], params_file: Path = PARAMS_FILE, origin: str = "") -> Params:
    """The validated parameters `params.yaml` plus `overrides` resolve to (what the run will use)."""
    raw = yaml.safe_load(Path(params_file).read_text())
    origin = origin or f"{params_file} with overrides"
    try:
        return parse_params(apply(raw, overrides), origin)
    except KeyError as missing:
        raise PresetError(f"{origin}: {missing.args[0]}: no such key in {params_file}") from None


def load_preset(path: Path, params_file: Path = PARAMS_FILE) -> dict[str, Any]:
    """The preset's overrides, checked against `params_file` (see the module's docstring)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PresetError(f"{path}: cannot read the preset: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise PresetError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    overrides = raw.get("set") if isinstance(raw, dict) and set(raw) == {"set"} else None
    if not isinstance(overrides, dict) or not overrides or not all(isinstance(k, str) for k in overrides):
        raise PresetError(f"{path}: expected one mapping 'set' of params.yaml keys (train.lr: 0.001) to values")
    try:
        resolve(overrides, params_file, origin=f"{path} applied to {params_file}")
    except ParamsError as error:
        raise PresetError(str(error)) from None
    return overrides
