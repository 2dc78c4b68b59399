"""Optuna tuning of one model on one fold's train/validation split, through the train stage's loop.

A trial is a recipe: `params.yaml`'s train and augment sections with the tuned keys replaced by
Optuna's suggestions (`tune.space`), validated like `params.yaml` itself, then trained by
`tasks.train.fit` for `tune.epochs` on a stratified `tune.subsample` of the fold's training images
and scored on the fold's validation images (never the test set). Each epoch's validation accuracy
is reported to Optuna, whose pruner stops trials that lag.

The study lives in Optuna's storage (SQLite file by default, any RDB URL to share one study across
machines); its name carries a digest of everything a trial's score depends on, so a changed budget,
space, recipe or data set starts a new study while an interrupted one continues. Trial 0 is the
recipe of `params.yaml` unchanged: the study shows whether it found anything better at this budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from tasks.config import AugmentParams, Params, TrainParams, TuneParams, parse_params
from tasks.errors import PipelineError
from tasks.paths import Paths

HEARTBEAT_S = 60  # a trial whose process died is failed (and retried) after 2 missed heartbeats


def study_name(params: Params, paths: Paths) -> str:
    """`tune.study` plus a digest of what a trial's score depends on (not of the trial budget:
    more trials or more time continue the same study)."""
    t = params.tune
    h = hashlib.sha256(json.dumps([
        t.model, t.fold, t.epochs, t.subsample, {k: v.model_dump() for k, v in t.space.items()},
        params.train.recipe(), params.augment.model_dump(), params.base.seed,
    ], sort_keys=True).encode())
    for f in (paths.prepared_train, paths.folds, paths.train_index):
        try:
            with open(f, "rb") as fh:
                h.update(hashlib.file_digest(fh, "sha256").digest())
        except FileNotFoundError:
            raise TuneError(f"{f}: missing; the study is named after the prepared data and its folds "
                            "(`dvc repro split` or `dvc pull` makes them)") from None
    return f"{t.study}-{h.hexdigest()[:10]}"


def storage_url(t: TuneParams, paths: Paths) -> str:
    return t.storage or f"sqlite:///{paths.tune_storage.resolve()}"


def open_study(params: Params, paths: Paths, worker: int = 0):
    """Create or load the study; enqueue the unchanged recipe as its first trial. Each worker's
    sampler gets its own seed: with one seed, two workers would draw the same trials."""
    import optuna

    t = params.tune
    url = storage_url(t, paths)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_S, grace_period=2 * HEARTBEAT_S,
        heartbeat_stale_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=1),
        engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=t.warmup_epochs),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=max(1, t.warmup_epochs),
                                                             max_resource=t.epochs),
        "none": optuna.pruners.NopPruner,
    }[t.pruner]()
    study = optuna.create_study(
        storage=storage, study_name=study_name(params, paths), direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=params.base.seed + worker), pruner=pruner, load_if_exists=True)
    if not study.trials:
        check_space(params)
        study.enqueue_trial(default_values(params), user_attrs={"baseline": True})
    return study


class TuneError(PipelineError):
    """A study that cannot start; the message names the key."""


def check_space(params: Params) -> None:
    """Trial 0 is params.yaml's own recipe: its values must lie inside `tune.space`. Checked when
    the tune stage starts, not on every read of params.yaml (a preset may leave the space)."""
    for key, value in default_values(params).items():
        dim = params.tune.space[key]
        inside = value in dim.choices if dim.choices is not None else dim.low <= value <= dim.high
        if not inside:
            space = list(dim.choices) if dim.choices is not None else f"[{dim.low}, {dim.high}]"
            raise TuneError(f"params.yaml: tune.space.{key}: {key} = {value!r} lies outside {space} "
                            "(trial 0 of a study is this recipe)")


def default_values(params: Params) -> dict:
    """The tuned keys' values in `params.yaml`: the recipe every suggestion is compared with."""
    sections = {"train": params.train, "augment": params.augment}
    return {key: getattr(sections[key.split(".")[0]], key.split(".", 1)[1]) for key in params.tune.space}


def suggest(trial, params: Params) -> dict:
    """One value per tuned key: an int range for int keys, a float range, or a choice."""
    values = {}
    defaults = default_values(params)
    for key, dim in params.tune.space.items():
        if dim.choices is not None:
            values[key] = trial.suggest_categorical(key, list(dim.choices))
        elif isinstance(defaults[key], int) and float(dim.low).is_integer() and float(dim.high).is_integer():
            values[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            values[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return values


def trial_recipe(params: Params, values: dict) -> tuple[TrainParams, AugmentParams]:
    """params.yaml's train and augment sections with `values` (dotted keys) and the trial budget,
    validated as params.yaml is: an impossible combination fails the trial with the key named."""
    raw = params.model_dump(mode="json")
    for key, value in values.items():
        section, name = key.split(".", 1)
        raw[section][name] = value
    raw["train"]["epochs"] = params.tune.epochs
    checked = parse_params(raw, f"tune trial {values}")
    return checked.train, checked.augment


def subsample_paths(params: Params, paths: Paths, work: Path) -> Paths:
    """A `Paths` under `work` whose fold `tune.fold` trains on a stratified `tune.subsample` of its
    training ids (drawn with base.seed); the prepared images are a link to the real ones."""
    sub = Paths(work)
    sub.splits.mkdir(parents=True, exist_ok=True)
    sub.prepared.mkdir(parents=True, exist_ok=True)
    if not sub.prepared_train.exists():
        os.symlink(paths.prepared_train.resolve(), sub.prepared_train)
    index = pd.read_parquet(paths.train_index)
    index = index[index["fold"] == params.tune.fold]
    if params.tune.subsample < 1:
        labels = pq.read_table(paths.prepared_train, columns=["label"]).column("label").to_numpy()
        rng = np.random.default_rng(params.base.seed)
        keep = []
        for _, rows in index.groupby(labels[index["id"].to_numpy()]):
            n = max(1, math.ceil(len(rows) * params.tune.subsample))
            keep.append(rows.iloc[np.sort(rng.choice(len(rows), n, replace=False))])
        index = pd.concat(keep).sort_index()
    index.to_parquet(sub.train_index)
    pd.read_parquet(paths.folds).to_parquet(sub.folds)
    pd.read_csv(paths.class_counts).to_csv(sub.class_counts, index=False)
    return sub


def run_trials(params: Params, paths: Paths, worker: int, threads: int | None = None) -> int:
    """One worker of the study: run trials until the study holds `tune.trials` finished ones or
    the time budget is spent. Several workers (processes, Dask workers, machines sharing an RDB
    storage) can run this at once. Returns how many trials this worker ran."""
    import optuna
    import torch

    from tasks import train
    from tasks.checkpoints import Checkpoint

    if threads:
        torch.set_num_threads(threads)
    t = params.tune
    study = open_study(params, paths, worker)
    # Scratch space outside DVC's outputs and git: the subsampled fold, each trial's checkpoint.
    work = paths.checkpoints / "tune" / study.study_name
    data_paths = subsample_paths(params, paths, work / f"data_{worker}")
    data = train.read_training_set(data_paths)
    split = train.read_fold_split(data_paths, t.fold, data.classes)
    device = train.pick_device(params.train.device)
    ran = 0

    def objective(trial) -> float:
        nonlocal ran
        ran += 1
        values = suggest(trial, params)
        p, aug = trial_recipe(params, values)

        def report(row: dict) -> None:
            trial.report(row["val/acc"], row["epoch"])
            if trial.should_prune():
                print(f"trial {trial.number}: pruned after epoch {row['epoch']} "
                      f"(val acc {row['val/acc']:.4f})", flush=True)
                raise optuna.TrialPruned()

        checkpoint = Checkpoint(str(work), "trials", f"trial_{trial.number}")
        print(f"trial {trial.number}: {values}", flush=True)
        state = train.fit(t.model, t.fold, train.fold_seed(params.base.seed, t.model, t.fold), p, aug,
                          train.load_fold(data, split, p.input_scaling, device), checkpoint, None,
                          on_epoch=report)
        metrics = state["metrics"]
        trial.set_user_attr("best_epoch", metrics["best_epoch"])
        trial.set_user_attr("train_seconds", metrics["train_seconds"])
        return metrics["val_acc"]

    # A recipe whose loss turns NaN (too high a learning rate, say) is a bad trial, not a broken
    # study: Optuna records it as failed and this worker draws the next one.
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study.optimize(objective, timeout=t.timeout_minutes * 60 or None,
                   catch=(ValueError, train.TrainingDiverged),
                   callbacks=[optuna.study.MaxTrialsCallback(t.trials, states=finished)])
    return ran


def summarize(params: Params, paths: Paths) -> dict:
    """Write the trials table (Parquet), the best recipe as a preset file and the plots; returns
    the summary (best value against the unchanged recipe's). The report's record of the study,
    tune/summary.json, is `python -m flows.tune table`'s (`results_record`)."""
    study = open_study(params, paths)
    trials = study.trials_dataframe(attrs=("number", "value", "state", "params", "user_attrs",
                                           "duration", "datetime_start"))
    trials["duration"] = trials["duration"].dt.total_seconds()
    paths.tune.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(paths.tune_trials, index=False)
    summary = summary_of(study, params)
    best, baseline = summary["best_val_acc"], summary["baseline_val_acc"]
    header = (f"# Best of Optuna study {study.study_name} ({params.tune.model}, fold {params.tune.fold}, "
              f"{params.tune.epochs} epochs on {params.tune.subsample:g} of its training images):\n"
              f"# validation accuracy {best:.4f}"
              + (f" against {baseline:.4f} for params.yaml's recipe" if baseline is not None else "") + ".\n"
              "# Apply: python -m flows.train_compare run --preset tune/best.yaml\n")
    paths.tune_best.write_text(header + yaml.safe_dump({"set": summary["best_params"]}, sort_keys=False))
    _plots(study, paths, params.base.seed)
    return summary


def summary_of(study, params: Params) -> dict:
    """The study in figures: its trials, the best one against params.yaml's recipe (trial 0)."""
    import optuna

    done = _completed(study)
    if not done:
        raise TuneError(f"study {study.study_name}: no trial completed")
    baseline = next((tr for tr in done if tr.user_attrs.get("baseline")), None)
    best = study.best_trial
    return {
        "study": study.study_name, "trials": len(study.trials),
        "completed": len(done), "pruned": sum(tr.state == optuna.trial.TrialState.PRUNED for tr in study.trials),
        "failed": sum(tr.state == optuna.trial.TrialState.FAIL for tr in study.trials),
        "best_trial": best.number, "best_val_acc": round(best.value, 4),
        "baseline_val_acc": round(baseline.value, 4) if baseline else None,
        "gain": round(best.value - baseline.value, 4) if baseline else None,
        "best_params": {key: best.params[key] for key in params.tune.space},
    }


def _completed(study) -> list:
    import optuna

    return [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]


def _rankable(completed: list) -> bool:
    """Whether parameter importances can be computed: completed trials that differ both in a
    parameter and in their value (fANOVA explains the values' variance: with none, it fails)."""
    return (len(completed) >= 2 and len({tr.value for tr in completed}) > 1
            and any(len({str(tr.params[k]) for tr in completed}) > 1 for k in completed[0].params))


def _plots(study, paths: Paths, seed: int) -> None:
    """Optuna's own optimisation-history and parameter-importance plots, beside the stage's tables
    (the report draws the same two from tune/summary.json)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    axes = optuna.visualization.matplotlib.plot_optimization_history(study)
    axes.figure.savefig(paths.tune_history_plot, dpi=110, bbox_inches="tight")
    plt.close(axes.figure)
    completed = _completed(study)
    if _rankable(completed):
        axes = optuna.visualization.matplotlib.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
        figure = axes.figure
    else:  # importances need completed trials that differ: say so rather than leave no file
        figure, axes = plt.subplots(figsize=(6, 1.5))
        axes.axis("off")
        axes.text(0.5, 0.5, f"{len(completed)} completed trial(s), too few or too alike "
                  "for parameter importances", ha="center", va="center")
    figure.savefig(paths.tune_importance_plot, dpi=110, bbox_inches="tight")
    plt.close(figure)


# ----------------------------------------------------------------------------- the report's record
# (written to tune/summary.json by `python -m flows.tune table`; read by tasks/tune_results.py)

def _importances(study, seed: int) -> dict[str, float]:
    """Optuna's parameter importances (fANOVA, its forest seeded); empty while fewer than two
    completed trials differ."""
    import optuna

    if not _rankable(_completed(study)):
        return {}
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    return {key: round(float(value), 4) for key, value in found.items()}


def results_record(params: Params, paths: Paths, collected: pd.Timestamp) -> dict:
    """What tune/summary.json holds: the study's set-up, every trial (a pruned one with the last
    validation accuracy it reported), the summary and the parameter importances. A study that does
    not exist yet gives a record with no trials."""
    import optuna

    t = params.tune
    name, url = study_name(params, paths), storage_url(t, paths)
    record = {"study": name, "collected": collected.isoformat(), "model": t.model, "fold": t.fold,
              "epochs": t.epochs, "subsample": t.subsample, "pruner": t.pruner,
              "baseline": default_values(params), "trials": [], "summary": None, "importances": {}}
    local = url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()
    if local or name not in optuna.study.get_all_study_names(url):
        return record
    study = optuna.load_study(study_name=name, storage=url)
    for tr in study.trials:
        steps = sorted(tr.intermediate_values)
        record["trials"].append({
            "number": tr.number, "state": tr.state.name, "params": tr.params,
            "value": tr.value if tr.value is not None else (tr.intermediate_values[steps[-1]] if steps else None),
            "epochs": len(steps), "baseline": bool(tr.user_attrs.get("baseline")),
            "seconds": round(tr.duration.total_seconds(), 1) if tr.duration else None})
    if any(tr["state"] == "COMPLETE" for tr in record["trials"]):
        record["summary"] = summary_of(study, params)
        record["importances"] = _importances(study, params.base.seed)
    return record
