import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from tasks import sources, train
from tasks.checkpoints import KEEP, Checkpoint
from tasks.models import build_model
from tests.conftest import ROOT, two_fold_data, with_changes

CLASSES = ["red", "green", "blue", "grey"]


def fold_data(paths, fold: int, scaling: str = "standardize") -> train.FoldData:
    data = train.read_training_set(paths)
    return train.load_fold(data, train.read_fold_split(paths, fold, data.classes), scaling, torch.device("cpu"))


@pytest.fixture
def tiny(tmp_path, params):
    """A 4-class, 16x16 data set of 160 images, split into 2 folds; fast settings."""
    paths, _, _ = two_fold_data(tmp_path, params, CLASSES, 40, size=16)
    fast = with_changes(params, train={"models": ("cnn_blog",), "epochs": 3, "batch_size": 32,
                                       "device": "cpu", "lr": 0.05})
    return fast, paths


def test_trains_and_writes_outputs(tiny):
    params, paths = tiny
    metrics = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    assert metrics["epochs"] == 3 and metrics["val_acc"] > 0.5  # colour classes are easy
    out = paths.fold_dir("cnn_blog", 0)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "weights.pt"]
    assert len(pd.read_csv(out / "history.csv")) == 3
    val = pd.read_csv(paths.fold_log_dir("cnn_blog", 0) / "plots" / "metrics" / "val" / "acc.tsv", sep="\t")
    assert val["step"].tolist() == [0, 1, 2]


def test_same_params_same_metrics(tiny):
    params, paths = tiny
    a = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    for folder in (paths.models, paths.checkpoints):
        subprocess.run(["rm", "-rf", str(folder)], check=True)
    b = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    assert {k: v for k, v in a.items() if k != "train_seconds" and k != "images_per_s"} == {
        k: v for k, v in b.items() if k != "train_seconds" and k != "images_per_s"}


def test_early_stopping_restores_the_best_weights(tiny):
    params, paths = tiny
    # A high constant learning rate on a tiny set overfits quickly: validation loss turns up.
    p = with_changes(params, train={"epochs": 40, "patience": 2, "schedule": "none", "lr": 0.3,
                                    "label_smoothing": 0.0}, augment={"enabled": False})
    metrics = train.train_fold("ann", 0, 1, p.train, p.augment, paths)
    history = pd.read_csv(paths.fold_dir("ann", 0) / "history.csv")
    assert metrics["epochs"] < 40 and metrics["stopped"].startswith("no validation-loss improvement")
    assert metrics["epochs"] - metrics["best_epoch"] == 2
    assert history["val/loss"].idxmin() + 1 == metrics["best_epoch"]
    saved = torch.load(paths.fold_dir("ann", 0) / "weights.pt", weights_only=True)
    model = build_model("ann", 4, 16)
    model.load_state_dict(saved["state_dict"])
    data = fold_data(paths, 0, p.train.input_scaling)
    val_loss, _ = train.evaluate(model, data, data.val_index, 512)
    assert val_loss == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_rising_until_is_the_last_epoch_whose_learning_rate_rose():
    assert train.rising_until([0.1, 0.1, 0.1]) == 0  # constant: patience counts from the start
    assert train.rising_until([0.01, 0.05, 0.1, 0.08, 0.02]) == 2  # warm-up in epochs 1 and 2
    assert train.rising_until([0.1, 0.05, 0.05, 0.08, 0.02]) == 3  # a warm restart counts too


def test_patience_counts_from_the_learning_rates_peak(tiny, monkeypatch):
    params, paths = tiny
    real, epochs = train.evaluate, iter(range(100))

    def worse_every_epoch(model, data, ids, batch_size):
        _, acc = real(model, data, ids, batch_size)
        return 1.0 + next(epochs), acc  # the best epoch is always the first

    monkeypatch.setattr(train, "evaluate", worse_every_epoch)
    p = with_changes(params, train={"epochs": 10, "patience": 2, "schedule": "one_cycle"})
    metrics = train.train_fold("ann", 0, 1, p.train, p.augment, paths)
    lrs = pd.read_csv(paths.fold_dir("ann", 0) / "history.csv")["lr"].tolist()
    assert metrics["best_epoch"] == 1 and metrics["stopped"].startswith("no validation-loss improvement")
    # Counted from the best epoch it would stop at epoch 3, inside one-cycle's warm-up (30 % of
    # the steps); counted from the peak it stops 2 epochs after the last epoch whose rate rose.
    # (history holds each epoch's starting rate; the last epoch's, past the peak, fell.)
    peak = train.rising_until(lrs)
    assert peak >= 2 and metrics["epochs"] == peak + 2 < 10


def test_nan_loss_names_model_fold_and_epoch(tiny):
    params, paths = tiny
    p = with_changes(params, train={"lr": 1e12, "schedule": "none", "optimizer": "sgd"})
    with pytest.raises(train.TrainingDiverged, match=r"ann fold 1: training loss is nan at epoch 1"):
        train.train_fold("ann", 1, 1, p.train, p.augment, paths)


def test_nan_validation_loss_stops_the_fold_like_a_diverged_training_loss(tiny, monkeypatch):
    params, paths = tiny
    real = train.evaluate

    def nan_on_validation(model, data, ids, batch_size):
        loss, acc = real(model, data, ids, batch_size)
        return float("nan"), acc

    monkeypatch.setattr(train, "evaluate", nan_on_validation)
    with pytest.raises(train.TrainingDiverged, match=r"ann fold 0: validation loss is nan at epoch 1"):
        train.train_fold("ann", 0, 1, params.train, params.augment, paths)
    assert not paths.fold_dir("ann", 0).exists()  # no weights without a best epoch


def test_finished_fold_is_restored_not_retrained(tiny, capsys):
    params, paths = tiny
    first = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    subprocess.run(["rm", "-rf", str(paths.models), str(paths.train_logs)], check=True)  # what DVC does
    again = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    assert "finished earlier" in capsys.readouterr().out
    assert again == first and (paths.fold_dir("cnn_blog", 0) / "weights.pt").exists()


def test_changed_parameters_do_not_reuse_a_checkpoint(tiny, capsys):
    params, paths = tiny
    train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    other = with_changes(params, train={"lr": 0.02})
    train.train_fold("cnn_blog", 0, 1, other.train, other.augment, paths)
    assert "finished earlier" not in capsys.readouterr().out
    train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)  # back to the first
    assert "finished earlier" in capsys.readouterr().out


def test_only_the_last_few_parameter_sets_keep_their_checkpoints(tiny):
    params, paths = tiny
    keys = []
    for lr in (0.01, 0.02, 0.03, 0.04):  # one more than is kept
        p = with_changes(params, train={"lr": lr, "epochs": 1})
        keys.append(train.train_fold("cnn_blog", 0, 1, p.train, p.augment, paths)["checkpoint"])
    kept = sorted(d.name for d in (paths.checkpoints / "cnn_blog" / "fold_0").iterdir())
    assert kept == sorted(keys[-KEEP:])  # the oldest went


@pytest.fixture
def code_copy(tmp_path, monkeypatch):
    """The project's sources copied aside, and checkpoint keys computed from the copy."""
    root = tmp_path / "code"
    for package in ("flows", "tasks"):
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(sources, "ROOT", root)
    return root


def test_changed_training_code_trains_again(tiny, code_copy, capsys):
    params, paths = tiny
    first = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    with open(code_copy / "tasks" / "augment.py", "a") as f:
        f.write("\n# a fix to the augmentation\n")
    again = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    out = capsys.readouterr().out
    assert "finished earlier" not in out and "cnn_blog fold 0 epoch 3/3" in out
    assert again["checkpoint"] != first["checkpoint"]


def test_scheduling_keys_reuse_the_finished_checkpoint(tiny, code_copy, capsys):
    params, paths = tiny
    first = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    with open(code_copy / "flows" / "train.py", "a") as f:  # how folds are scheduled, not trained
        f.write("\n# another task runner\n")
    other = with_changes(params, train={"parallel": 2, "task_runner": "processes", "retries": 3,
                                        "models": ("ann", "cnn_blog")})
    again = train.train_fold("cnn_blog", 0, 1, other.train, other.augment, paths)
    assert "finished earlier" in capsys.readouterr().out and again == first


def test_killed_training_resumes_from_its_checkpoint(tiny, tmp_path):
    params, paths = tiny
    p = with_changes(params, train={"epochs": 6})
    script = textwrap.dedent("""
        import pickle, sys
        from tasks import train
        args = pickle.loads(bytes.fromhex(sys.argv[1]))
        train.train_fold(*args)
    """)
    import pickle

    # One thread everywhere: float sums depend on how work is split between threads, and earlier
    # tests in this process may have changed torch's thread count.
    args = pickle.dumps(("cnn_blog", 0, 1, p.train, p.augment, paths, 1)).hex()
    process = subprocess.Popen([sys.executable, "-c", script, args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    checkpoint_dir = paths.checkpoints / "cnn_blog" / "fold_0"
    deadline = time.monotonic() + 120
    while not list(checkpoint_dir.glob("*/checkpoint.pt")):  # wait for the first epoch's checkpoint
        assert process.poll() is None and time.monotonic() < deadline, process.stdout.read()
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not paths.fold_dir("cnn_blog", 0).exists()

    state = torch.load(next(checkpoint_dir.glob("*/checkpoint.pt")), weights_only=True)
    done = len(state["history"])
    assert 1 <= done < 6 and not state.get("finished")
    resumed = train.train_fold("cnn_blog", 0, 1, p.train, p.augment, paths, threads=1)
    out = paths.fold_dir("cnn_blog", 0)
    history = pd.read_csv(out / "history.csv")
    weights = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]

    # Resuming is exact: the same history, metrics and weights as a run never interrupted.
    subprocess.run(["rm", "-rf", str(paths.checkpoints), str(paths.models)], check=True)
    straight = train.train_fold("cnn_blog", 0, 1, p.train, p.augment, paths, threads=1)
    timing = ["seconds", "images_per_s"]  # wall-clock figures, the only columns allowed to differ
    pd.testing.assert_frame_equal(history.drop(columns=timing),
                                  pd.read_csv(out / "history.csv").drop(columns=timing))
    assert {k: v for k, v in resumed.items() if k not in ("train_seconds", *timing)} == {
        k: v for k, v in straight.items() if k not in ("train_seconds", *timing)}
    straight_weights = torch.load(out / "weights.pt", weights_only=True)["state_dict"]
    assert weights.keys() == straight_weights.keys()
    assert all(torch.equal(weights[k], straight_weights[k]) for k in weights)


def test_class_weights_reach_the_loss(tiny):
    params, paths = tiny
    counts = pd.read_csv(paths.class_counts)
    counts.loc[counts["class"] == "red", "loss_weight"] = 3.0
    counts.to_csv(paths.class_counts, index=False)
    data = fold_data(paths, 0)
    assert data.class_weights.tolist() == [3.0, 1.0, 1.0, 1.0]


def test_summary_gives_mean_and_std_per_model():
    results = [{"model": "cnn", "fold": k, "val_acc": acc, "val_loss": 1.0, "epochs": 3, "best_epoch": 3,
                "train_seconds": 10.0, "parameters": 5} for k, acc in enumerate([0.8, 0.9])]
    summary = train.summarize(results)["cnn"]
    assert summary["val_acc_mean"] == pytest.approx(0.85)
    assert summary["val_acc_std"] == pytest.approx(0.0707, abs=1e-4)
    assert summary["folds"]["fold_1"] == {"val_acc": 0.9, "best_epoch": 3}


class _OsLosingTheSignalFile:
    """`os` for DVCLive's vscode module, where another fold deletes the signal file right after
    this process has checked that it exists: the race of two folds ending together."""

    def __init__(self):
        self.path = self

    def __getattr__(self, name):
        return getattr(os.path, name) if name in {"join", "dirname", "basename"} else getattr(os, name)

    def exists(self, path):
        found = os.path.exists(path)
        if found and os.path.basename(path) == train.DVCLIVE_SIGNAL:
            os.remove(path)
        return found


def test_two_folds_ending_together_do_not_fail_on_dvclives_signal_file(tmp_path, monkeypatch):
    import dvclive.vscode

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # as inside a DVC repository's stage
    monkeypatch.setattr(dvclive.vscode, "os", _OsLosingTheSignalFile())
    signal_file = tmp_path / ".dvc/tmp/exps/run" / train.DVCLIVE_SIGNAL

    def a_live(name):
        live = train._dvclive(tmp_path / name)
        live.log_metric("val/acc", 0.5)
        live.next_step()
        assert signal_file.exists()
        return live

    with pytest.raises(FileNotFoundError):  # the race, reproduced: DVCLive alone fails
        a_live("plain").end()
    live = a_live("ours")
    train._end(live)  # tolerated: everything but the signal file's removal is done
    assert (tmp_path / "ours" / "plots" / "metrics" / "val" / "acc.tsv").exists()


def test_other_missing_files_still_fail_the_fold():
    class Live:
        def end(self):
            raise FileNotFoundError(2, "No such file or directory", "/somewhere/metrics.json")

    with pytest.raises(FileNotFoundError):
        train._end(Live())


def test_on_epoch_sees_every_row_and_can_stop_the_loop(tiny):
    """The tune stage reports each epoch to Optuna through `on_epoch`; a pruned trial raises."""
    params, paths = tiny
    seen = []
    state = train.fit("cnn_blog", 0, 1, params.train, params.augment, fold_data(paths, 0),
                      Checkpoint(str(paths.checkpoints), "hook", "a"), None, on_epoch=seen.append)
    assert [row["epoch"] for row in seen] == [1, 2, 3]
    assert [row["val/acc"] for row in seen] == [row["val/acc"] for row in state["history"]]

    class Stop(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train.fit("cnn_blog", 0, 1, params.train, params.augment, fold_data(paths, 0),
                  Checkpoint(str(paths.checkpoints), "hook", "b"), None, on_epoch=stop_after_two)
