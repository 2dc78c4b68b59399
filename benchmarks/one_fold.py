"""Train one (model, fold) pair with the recipe in params.yaml (or a preset) and print its accuracies.

    python -m benchmarks.one_fold cnn 0                        # the default recipe
    python -m benchmarks.one_fold cnn 2 --set train.epochs=16  # a probe, params.yaml untouched
    python -m benchmarks.one_fold cnn 0 --preset presets/study.yaml --set train.epochs=10  # the study's, shortened

It reads the prepared data of the last `dvc repro` (`dvc repro prepare` makes it), makes the
splits the resolved parameters ask for (the preset's holdout and folds, say) and trains exactly as
the `train` stage does, but writes nowhere DVC looks: splits, weights, logs and checkpoints go to
a scratch folder (`--out`), so an interrupted probe resumes there. Prints the best epoch's
validation accuracy and the test accuracy without and with flip TTA. The README's single-fold
figures come from here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from flows.common import stage_main
from flows.train_compare import parse_sets
from tasks import evaluate, split, train
from tasks.config import PARAMS_FILE
from tasks.models import check_names
from tasks.paths import Paths
from tasks.presets import load_preset, resolve
from tasks.tables import read_labels, read_test


def run(model_name: str, fold: int, preset: Path | None, sets: list[str], out: Path) -> None:
    overrides = {**(load_preset(preset) if preset else {}), **parse_sets(sets)}
    params = resolve(overrides, origin=f"{PARAMS_FILE} with {preset or 'no preset'} and {sets}")
    check_names([model_name])

    project, scratch = Paths(), Paths(out)
    scratch.prepared.parent.mkdir(parents=True, exist_ok=True)
    scratch.prepared.unlink(missing_ok=True)
    scratch.prepared.symlink_to(project.prepared.resolve(), target_is_directory=True)
    labels, classes = read_labels(project.prepared_train)
    split.write_splits(split.make_splits(labels, classes, params.split, params.base.seed), scratch)
    started = time.perf_counter()
    metrics = train.train_fold(model_name, fold, params.base.seed, params.train, params.augment, scratch)
    minutes = (time.perf_counter() - started) / 60

    model, config = evaluate.load_model(scratch.fold_dir(model_name, fold) / "weights.pt")
    test = read_test(project.prepared_test)
    device = train.pick_device(params.evaluate.device)
    accuracy = {}
    for tta in (False, True):
        probs = evaluate.predict(model, config, test.pixels, params.evaluate.model_copy(update={"tta_flip": tta}),
                                 device)
        accuracy[tta] = float((probs.argmax(1) == test.labels).mean())
    recipe = ", ".join([*([str(preset)] if preset else []), *sets]) or "params.yaml"
    print(f"{model_name} fold {fold} ({recipe}), {metrics['epochs']} epochs of at most {params.train.epochs} "
          f"on {metrics['device']} ({torch.__version__}), {minutes:.1f} min: validation {metrics['val_acc']:.2%} "
          f"(best epoch {metrics['best_epoch']}), test {accuracy[False]:.2%}, {accuracy[True]:.2%} with flip TTA")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("fold", type=int)
    parser.add_argument("--preset", type=Path, help="a preset file (presets/study.yaml): its overrides first")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("/tmp/one_fold"), help="scratch folder")
    args = parser.parse_args()
    stage_main(lambda: run(args.model, args.fold, args.preset, args.set, args.out))


if __name__ == "__main__":
    main()
