import os
import signal
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest
import torch

from tasks import split, train
from tasks.models import build_model
from tests.conftest import ROOT, class_images, with_changes, write_prepared_split

CLASSES = ["red", "green", "blue", "grey"]


@pytest.fixture
def tiny(tmp_path, params):
    """A 4-class, 16x16 data set of 160 images, split into 2 folds; fast settings."""
    pixels, labels = class_images(len(CLASSES), 40, size=16)
    paths = train.FoldPaths(prepared=tmp_path / "prepared" / "train.parquet", splits=tmp_path / "splits",
                            models=tmp_path / "models", logs=tmp_path / "logs",
                            checkpoints=tmp_path / "checkpoints")
    write_prepared_split(paths.prepared, CLASSES, pixels, labels)
    split_params = with_changes(params, split={"folds": 2}).split
    split.write_splits(split.make_splits(labels, CLASSES, split_params, 0), paths.splits)
    fast = with_changes(params, train={"models": ("cnn_blog",), "epochs": 3, "batch_size": 32,
                                       "device": "cpu", "lr": 0.05})
    return fast, paths


def test_trains_and_writes_outputs(tiny):
    params, paths = tiny
    metrics = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    assert metrics["epochs"] == 3 and metrics["val_acc"] > 0.5  # colour classes are easy
    out = paths.out_dir("cnn_blog", 0)
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "metrics.json", "weights.pt"]
    assert len(pd.read_csv(out / "history.csv")) == 3
    val = pd.read_csv(paths.log_dir("cnn_blog", 0) / "plots" / "metrics" / "val" / "acc.tsv", sep="\t")
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
    history = pd.read_csv(paths.out_dir("ann", 0) / "history.csv")
    assert metrics["epochs"] < 40 and metrics["stopped"].startswith("no validation-loss improvement")
    assert metrics["epochs"] - metrics["best_epoch"] == 2
    assert history["val/loss"].idxmin() + 1 == metrics["best_epoch"]
    saved = torch.load(paths.out_dir("ann", 0) / "weights.pt", weights_only=True)
    model = build_model("ann", 4, 16)
    model.load_state_dict(saved["state_dict"])
    data = train.load_fold(paths, 0, p.train.input_scaling, torch.device("cpu"))
    val_loss, _ = train.evaluate(model, data, data.val_index, 512)
    assert val_loss == pytest.approx(metrics["val_loss"], rel=1e-5)


def test_nan_loss_names_model_fold_and_epoch(tiny):
    params, paths = tiny
    p = with_changes(params, train={"lr": 1e12, "schedule": "none", "optimizer": "sgd"})
    with pytest.raises(train.TrainingDiverged, match=r"ann fold 1: training loss is nan at epoch 1"):
        train.train_fold("ann", 1, 1, p.train, p.augment, paths)


def test_finished_fold_is_restored_not_retrained(tiny, capsys):
    params, paths = tiny
    first = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    subprocess.run(["rm", "-rf", str(paths.models), str(paths.logs)], check=True)  # what DVC does
    again = train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    assert "finished earlier" in capsys.readouterr().out
    assert again == first and (paths.out_dir("cnn_blog", 0) / "weights.pt").exists()


def test_changed_parameters_do_not_reuse_a_checkpoint(tiny, capsys):
    params, paths = tiny
    train.train_fold("cnn_blog", 0, 1, params.train, params.augment, paths)
    other = with_changes(params, train={"lr": 0.02})
    train.train_fold("cnn_blog", 0, 1, other.train, other.augment, paths)
    assert "finished earlier" not in capsys.readouterr().out
    assert len(list((paths.checkpoints / "cnn_blog" / "fold_0").iterdir())) == 1  # the stale one went


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
    assert not paths.out_dir("cnn_blog", 0).exists()

    state = train.load_checkpoint(next(checkpoint_dir.glob("*/checkpoint.pt")))
    done = len(state["history"])
    assert 1 <= done < 6 and not state.get("finished")
    resumed = train.train_fold("cnn_blog", 0, 1, p.train, p.augment, paths, threads=1)
    history = pd.read_csv(paths.out_dir("cnn_blog", 0) / "history.csv")
    assert history["epoch"].tolist() == [1, 2, 3, 4, 5, 6]

    # Resuming is exact: the same result as a run that was never interrupted.
    subprocess.run(["rm", "-rf", str(paths.checkpoints), str(paths.models)], check=True)
    straight = train.train_fold("cnn_blog", 0, 1, p.train, p.augment, paths, threads=1)
    assert resumed["val_loss"] == straight["val_loss"] and resumed["val_acc"] == straight["val_acc"]


def test_class_weights_reach_the_loss(tiny):
    params, paths = tiny
    counts = pd.read_csv(paths.splits / "class_counts.csv")
    counts.loc[counts["class"] == "red", "loss_weight"] = 3.0
    counts.to_csv(paths.splits / "class_counts.csv", index=False)
    data = train.load_fold(paths, 0, "standardize", torch.device("cpu"))
    assert data.class_weights.tolist() == [3.0, 1.0, 1.0, 1.0]


def test_summary_gives_mean_and_std_per_model():
    results = [{"model": "cnn", "fold": k, "val_acc": acc, "val_loss": 1.0, "epochs": 3, "best_epoch": 3,
                "train_seconds": 10.0, "parameters": 5} for k, acc in enumerate([0.8, 0.9])]
    summary = train.summarize(results)["cnn"]
    assert summary["val_acc_mean"] == pytest.approx(0.85)
    assert summary["val_acc_std"] == pytest.approx(0.0707, abs=1e-4)
    assert summary["folds"]["fold_1"] == {"val_acc": 0.9, "best_epoch": 3}
