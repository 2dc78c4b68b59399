"""`make bench`: each figure next to its reference, measured in the same run on this machine.

    python -m benchmarks.suite [--quick] [--sections prepare training evaluation time-to-accuracy stages orchestration]

Absolute times on a shared machine drift, so every figure comes with a reference measured beside
it and their ratio:
- prepare: the stage's decoding (`tasks.prepare.read_archive`, its worker processes) against a
  bare loop that decodes the same archive's images one by one; its peak memory against the size
  of the decoded pixels it must hold;
- training: the real loop (`tasks.train.train_one_epoch`: indexing, augmentation, logging) against
  a bare PyTorch step of the same model on random data, per model and batch size;
- evaluation: test images/s per model with flip TTA against without;
- time to accuracy: from the trained folds' histories (`models/cnn/fold_*/history.csv`; without
  them, the DVCLive logs in git at metrics/train.json's mean epoch time), the wall time until
  validation accuracy first reaches 80 %, against the whole training time;
- stages: each stage of dvc.yaml as its own process on the quick variant (benchmarks/stages.py):
  its start-up cost against importing its module alone, its peak memory against that import's;
- orchestration: the quick variant through `dvc repro` with and without a running Prefect server
  and through the deployment (benchmarks/orchestration_overhead.py): the overhead, everything
  beyond the stages' own compute, against that compute.
`--quick` runs every section on tiny sizes (the last two on the test projects' 12 images per class
and split), to check that the suite runs; its figures mean little.
Writes benchmarks/results.json and BENCHMARKS.md (a table naming the machine); prints as it goes.
Never fails on slowness; a section whose inputs are missing is reported as skipped.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import torch
from PIL import Image

from benchmarks import machine, orchestration_overhead, stages, train_throughput
from tasks import evaluate, prepare
from tasks.archive import iter_members
from tasks.config import load_params
from tasks.models import build_model
from tasks.paths import Paths
from tasks.train import pick_device

RESULTS = Path("benchmarks/results.json")
MARKDOWN = Path("BENCHMARKS.md")
TARGET = 0.80  # validation accuracy of the time-to-accuracy figure
SECTIONS = ("prepare", "training", "evaluation", "time-to-accuracy", "stages", "orchestration")


def figure(section: str, what: str, value: float, unit: str, reference: str, reference_value: float) -> dict:
    row = {"section": section, "what": what, "value": value, "unit": unit, "reference": reference,
           "reference_value": reference_value,
           "ratio": value / reference_value if reference_value else None}
    print(f"{section:17} {what:44} {value:10.1f} {unit:6} vs {reference} {reference_value:.1f}"
          + (f" ({row['ratio']:.2f}x)" if row["ratio"] is not None else ""), flush=True)
    return row


def skipped(section: str, why: str) -> list[dict]:
    print(f"{section:17} skipped: {why}", flush=True)
    return [{"section": section, "what": "skipped", "skipped": why}]


def peak_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- sections

def bench_prepare(paths: Paths, quick: bool) -> list[dict]:
    source = paths.raw / "source.json"
    if not source.exists():
        return skipped("prepare", f"{source} is missing (run `dvc repro download`)")
    info = json.loads(source.read_text())
    if info["layout"] == "cifar-python":
        return skipped("prepare", "the official pickled archive needs no decoding")
    size = load_params().data.image_size
    archive, limit = paths.raw / info["file"], 3000 if quick else None
    started, count = time.perf_counter(), 0
    for member in iter_members(archive):  # the bare loop: read, decode, to an array
        if PurePosixPath(member.name).suffix.lower() in (".jpg", ".jpeg", ".png"):
            np.asarray(Image.open(io.BytesIO(member.read())).convert("RGB"))
            count += 1
            if limit and count >= limit:
                break
    bare = count / (time.perf_counter() - started)
    if quick:  # the stage has no partial mode: the quick run keeps to the bare loop
        return [figure("prepare", "bare decode loop, 1 process", bare, "img/s", "itself", bare)]
    started = time.perf_counter()
    data = prepare.read_archive(paths.raw, size, workers=2)
    images = sum(len(s.labels) for s in data.splits.values())
    stage = images / (time.perf_counter() - started)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    pixels = sum(s.pixels.nbytes for s in data.splits.values()) / 2**20
    return [figure("prepare", "stage decoding, 2 worker processes", stage, "img/s", "bare decode loop", bare),
            figure("prepare", "peak memory, main process", peak_mib(), "MiB", "decoded pixels", pixels),
            figure("prepare", "peak memory, largest decoding worker", children, "MiB", "decoded pixels", pixels)]


def bench_training(quick: bool) -> list[dict]:
    models, batches, steps = (["cnn_blog"], [32], 5) if quick else (["cnn_blog", "cnn", "ann"], [32, 128], 30)
    return [figure("training", f"{r['model']}, batch {r['batch']}: real loop", r["loop"], "img/s",
                   "bare step", r["bare"])
            for r in train_throughput.measure(models, batches, steps)]


def bench_evaluation(quick: bool) -> list[dict]:
    params = load_params()
    device = pick_device(params.evaluate.device)
    size = params.data.image_size
    n = 256 if quick else 4000
    pixels = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    config = {"classes": [str(i) for i in range(10)], "mean": [0.5] * 3, "std": [0.25] * 3}
    rows = []
    for name in (["cnn_blog"] if quick else ["cnn_blog", "cnn", "ann"]):
        torch.manual_seed(0)
        model = build_model(name, 10, size, params.train.activation)
        speed = {}
        for tta in (False, True):
            p = params.evaluate.model_copy(update={"tta_flip": tta})
            evaluate.predict(model, config, pixels[:p.batch_size], p, device)  # warm-up
            started = time.perf_counter()
            evaluate.predict(model, config, pixels, p, device)
            speed[tta] = n / (time.perf_counter() - started)
        rows.append(figure("evaluation", f"{name}: test images with flip TTA", speed[True], "img/s",
                           "without TTA", speed[False]))
    return rows


def _committed_histories(paths: Paths) -> list[tuple[str, pd.DataFrame]]:
    """Each cnn fold's validation accuracy per epoch from the DVCLive logs in git, with the mean
    epoch time of metrics/train.json: what a clone holds without the models from DVC's cache."""
    train = paths.root / "metrics" / "train.json"
    logs = sorted((paths.root / "logs" / "train" / "cnn").glob("fold_*/plots/metrics/val/acc.tsv"))
    if not (train.exists() and logs):
        return []
    cnn = json.loads(train.read_text()).get("cnn") or {}
    frames = {log.parents[3].name: pd.read_csv(log, sep="\t") for log in logs}  # fold_k: step, acc
    per_epoch = cnn.get("train_seconds", 0) / sum(len(frame) for frame in frames.values())
    return [(fold, pd.DataFrame({"epoch": frame["step"] + 1, "val/acc": frame["acc"], "seconds": per_epoch}))
            for fold, frame in frames.items()]


def bench_time_to_accuracy(paths: Paths) -> list[dict]:
    histories = [(h.parent.name, pd.read_csv(h)) for h in sorted((paths.root / "models" / "cnn").glob(
        "fold_*/history.csv"))]
    source = ""
    if not histories:
        histories, source = _committed_histories(paths), ", from the committed logs"
    if not histories:
        return skipped("time-to-accuracy", "no models/cnn/fold_*/history.csv and no committed cnn logs "
                                           "(train the cnn first)")
    rows = []
    for fold, frame in histories:
        elapsed = frame["seconds"].cumsum()
        reached = frame.index[frame["val/acc"] >= TARGET]
        if len(reached):
            rows.append(figure("time-to-accuracy", f"cnn {fold}: to {TARGET:.0%} validation accuracy "
                               f"(epoch {int(frame['epoch'][reached[0]])}{source})",
                               float(elapsed[reached[0]]) / 60, "min", "whole training",
                               float(elapsed.iloc[-1]) / 60))
        else:
            rows += skipped("time-to-accuracy", f"cnn {fold} never reached {TARGET:.0%}{source}")
    return rows


def bench_stages(quick: bool) -> list[dict]:
    rows = []
    for r in stages.measure(tiny=quick):
        reference = f"importing {r['module']} alone"
        rows += [figure("stages", f"{r['stage']}: start-up and teardown (wall - flow run)", r["startup"], "s",
                        reference, r["import_wall"]),
                 figure("stages", f"{r['stage']}: peak memory", r["peak_mib"], "MiB", reference, r["import_mib"])]
    return rows


def bench_orchestration(quick: bool) -> list[dict]:
    what = "tiny project" if quick else "quick variant"
    return [figure("orchestration", f"{what} through {r['mode']}: overhead", r["overhead"], "s",
                   "the stages' compute", r["compute"])
            for r in orchestration_overhead.measure(list(orchestration_overhead.MODES), tiny=quick)]


# ----------------------------------------------------------------------------- output

def markdown(rows: list[dict], about: dict, when: str = "") -> str:
    lines = ["# Benchmarks", "",
             f"Measured by `make bench` (`python -m benchmarks.suite`){' on ' + when if when else ''}, on "
             f"{machine.in_words(about)}. "
             "Each figure stands next to a reference measured in the same run; the ratio is figure / reference.",
             "", "| section | figure | value | reference | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['section']} | skipped: {r['skipped']} | | | |")
        else:
            ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
            lines.append(f"| {r['section']} | {r['what']} | {r['value']:,.1f} {r['unit']} | "
                         f"{r['reference']}: {r['reference_value']:,.1f} {r['unit']} | {ratio} |")
    return "\n".join(lines) + "\n"


def run(sections: list[str], quick: bool, paths: Paths) -> list[dict]:
    rows: list[dict] = []
    for section in sections:
        if section == "prepare":
            rows += bench_prepare(paths, quick)
        elif section == "training":
            rows += bench_training(quick)
        elif section == "evaluation":
            rows += bench_evaluation(quick)
        elif section == "time-to-accuracy":
            rows += bench_time_to_accuracy(paths)
        elif section == "stages":
            rows += bench_stages(quick)
        elif section == "orchestration":
            rows += bench_orchestration(quick)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few steps of each, to check the suite runs")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", type=Path, default=MARKDOWN)
    args = parser.parse_args()
    about, when = machine.describe(), f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    print(f"machine: {machine.in_words(about)}", flush=True)
    rows = run(args.sections, args.quick, Paths())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": about, "measured": when, "quick": args.quick, "figures": rows},
                                   indent=2) + "\n")
    args.markdown.write_text(markdown(rows, about, when))
    print(f"wrote {args.out} and {args.markdown}")


if __name__ == "__main__":
    main()
