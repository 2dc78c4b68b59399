"""`params.yaml`, read once into frozen, validated objects (one per section).

An unknown key, a wrong type or an impossible value raises `ParamsError` naming the file, the
key and the value, before any stage does work. Stages take the section they need, never the tree.
Reading the parameters imports neither torch nor the model registry (a stage that does not train
should not pay for either); `train.models` is checked against the registry by the train stage.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tasks.errors import PipelineError

PARAMS_FILE = Path("params.yaml")

_CHECKSUM = re.compile(r"^$|^md5:[0-9a-f]{32}$|^sha256:[0-9a-f]{64}$")


class ParamsError(PipelineError, ValueError):
    """A parameter file that cannot be used; the message names the key and the value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BaseParams(_Section):
    seed: int = Field(ge=0)


class DataParams(_Section):
    source: str = Field(min_length=1)
    checksum: str
    fallback_source: str
    fallback_checksum: str
    download_retries: int = Field(ge=1)
    image_size: int = Field(ge=8, le=512)

    @field_validator("checksum", "fallback_checksum")
    @classmethod
    def _checksum_form(cls, value: str) -> str:
        if not _CHECKSUM.match(value):
            raise ValueError("must be '', 'md5:<32 hex digits>' or 'sha256:<64 hex digits>'")
        return value


class SplitParams(_Section):
    holdout: float = Field(ge=0, lt=1)
    folds: int = Field(ge=2)
    subsample: float = Field(gt=0, le=1)
    imbalance: float = Field(gt=0, le=1)
    balancing: Literal["none", "oversample", "class_weight"]


def _scheduling(**constraints):
    """A key that decides how the train stage runs, not what a (model, fold) pair learns: a new
    value re-runs the stage, which restores finished pairs from their checkpoints."""
    return Field(json_schema_extra={"scheduling": True}, **constraints)


class TrainParams(_Section):
    models: tuple[str, ...] = _scheduling(min_length=1)  # which pairs exist, not how one trains
    activation: Literal["relu", "gelu", "silu"]
    dropout: bool
    l2: float = Field(ge=0)
    label_smoothing: float = Field(ge=0, lt=1)
    optimizer: Literal["adam", "sgd"]
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    schedule: Literal["none", "one_cycle", "cosine", "plateau"]
    plateau_factor: float = Field(gt=0, lt=1)
    plateau_patience: int = Field(ge=0)
    min_lr: float = Field(ge=0)
    batch_size: int = Field(ge=1)
    epochs: int = Field(ge=1)
    patience: int = Field(ge=1)
    input_scaling: Literal["standardize", "divide255"]
    device: Literal["auto", "cpu", "cuda"]
    parallel: int = _scheduling(ge=1)
    task_runner: Literal["threads", "processes", "dask"] = _scheduling()
    dask_address: str = _scheduling()
    checkpoints: str = _scheduling()
    retries: int = _scheduling(ge=0)

    def recipe(self) -> dict:
        """Every value that decides what one (model, fold) pair learns: the keys not `_scheduling`."""
        fields = type(self).model_fields
        return {k: v for k, v in self.model_dump().items()
                if not (fields[k].json_schema_extra or {}).get("scheduling")}

    @field_validator("models", mode="before")
    @classmethod
    def _list_to_tuple(cls, value: object) -> object:
        return tuple(value) if isinstance(value, list) else value

    @field_validator("models")
    @classmethod
    def _each_model_once(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Whether each name is registered is checked when the train stage starts
        # (tasks/models.py: check_names): the registry needs torch, reading parameters does not.
        if len(set(value)) != len(value):
            raise ValueError("lists a model twice")
        return value


class AugmentParams(_Section):
    enabled: bool
    rotation: float = Field(ge=0, le=180)
    shift: float = Field(ge=0, lt=1)
    shear: float = Field(ge=0, lt=90)
    zoom: float = Field(ge=0, lt=1)
    hflip: bool
    fill: Literal["nearest", "reflect", "zeros"]
    crop_padding: int = Field(ge=0)


class EvaluateParams(_Section):
    tta_flip: bool
    batch_size: int = Field(ge=1)
    calibration_bins: int = Field(ge=1, le=1000)
    device: Literal["auto", "cpu", "cuda"]


class ReportParams(_Section):
    sample_images: int = Field(ge=1, le=200)
    mistakes: int = Field(ge=0, le=200)


class DeployParams(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    schedule: bool
    cron: str

    @field_validator("cron")
    @classmethod
    def _cron_form(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("must be a cron expression of five fields, e.g. '0 3 * * 1'")
        return value


class SearchDimension(_Section):
    """One tuned value: a range (`low`, `high`, sampled on a log scale with `log`) or `choices`."""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[bool | int | float | str, ...] | None = None

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchDimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None or not self.choices:
                raise ValueError("give either non-empty `choices` or `low` and `high`, not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("needs `low` < `high` (or `choices`)")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale range needs `low` > 0")
        return self


class TuneParams(_Section):
    model: str = Field(min_length=1)
    fold: int = Field(ge=0)
    trials: int = Field(ge=1)
    timeout_minutes: float = Field(ge=0)
    epochs: int = Field(ge=1)
    subsample: float = Field(gt=0, le=1)
    pruner: Literal["median", "hyperband", "none"]
    warmup_epochs: int = Field(ge=0)
    parallel: int = Field(ge=1)
    task_runner: Literal["threads", "processes", "dask"]
    storage: str
    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    space: dict[str, SearchDimension] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _tunable_keys(cls, value: dict[str, SearchDimension]) -> dict[str, SearchDimension]:
        for key in value:
            section, _, name = key.partition(".")
            fields = {"train": TrainParams, "augment": AugmentParams}.get(section)
            if fields is None or name not in fields.model_fields:
                raise ValueError(f"{key!r}: not a key of the train or augment section")
            if (fields.model_fields[name].json_schema_extra or {}).get("scheduling"):
                raise ValueError(f"{key!r}: decides how training runs, not what it learns")
        return value


class Params(_Section):
    base: BaseParams
    data: DataParams
    split: SplitParams
    train: TrainParams
    augment: AugmentParams
    evaluate: EvaluateParams
    report: ReportParams
    deploy: DeployParams
    tune: TuneParams


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: missing"
    return f"{key} = {error['input']!r}: {error['msg']}"


def parse_params(raw: object, origin: str = str(PARAMS_FILE)) -> Params:
    """Validate an already-loaded mapping; errors name `origin`, every bad key and its value."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{origin}: invalid parameters:\n  {problems}") from None


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Read and validate the parameter file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: no such parameter file") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    return parse_params(raw, str(path))
