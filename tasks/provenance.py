"""Which settings results come from: the params `dvc.lock` recorded against `params.yaml`.

`dvc.lock` records, per stage, the params it ran with; the metrics, evaluation files and report
in the same commit come from those runs. When they differ from that commit's `params.yaml`, the
commit shows results of other settings as if they were its own (as git once showed the quick
variant's). `drift` names each differing key: the guard test (tests/test_dvc_lock.py) fails on
it, and the retraining history (tasks/progression.py) leaves such commits out.

Both files are read as DVC reads them (`dvc.utils.serialize`, YAML 1.2): DVC writes `1e-06`,
which YAML 1.1 readers such as PyYAML take for a string.
"""

from __future__ import annotations


class _Missing:
    def __repr__(self) -> str:
        return "no such key"


MISSING = _Missing()


def lookup(params: dict, dotted: str):
    """A value by DVC's dotted key (`split.folds`) or a whole section (`train`); MISSING if absent."""
    node = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def flatten(values: dict, prefix: str = "") -> dict:
    """{"train": {"epochs": 16}} -> {"train.epochs": 16}; lists stay values."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recorded_params(lock: dict, stage: str) -> dict:
    """The params.yaml values one stage of a parsed dvc.lock ran with ({} when it records none)."""
    return ((lock.get("stages") or {}).get(stage) or {}).get("params", {}).get("params.yaml", {})


def drift(recorded: dict, params: dict) -> list[str]:
    """`key: dvc.lock has …, params.yaml has …` for every key of a recorded section that differs
    (a key only on one side included); [] when the results come from these params."""
    locked = flatten(recorded)
    current = flatten({key: lookup(params, key) for key in recorded})
    return [f"{key}: dvc.lock has {locked.get(key, MISSING)!r}, params.yaml has {current.get(key, MISSING)!r}"
            for key in sorted(locked.keys() | current.keys()) if locked.get(key, MISSING) != current.get(key, MISSING)]


def lock_drift(lock: dict, params: dict) -> list[str]:
    """`drift` over every stage of a parsed dvc.lock, each line prefixed with its stage."""
    return [f"{stage}: {line}" for stage in sorted(lock.get("stages") or {})
            for line in drift(recorded_params(lock, stage), params)]
