"""Train one (model, fold) pair with the recipe in params.yaml and print its accuracies.

    python -m benchmarks.one_fold cnn 0                        # the default recipe
    python -m benchmarks.one_fold cnn 2 --set train.epochs=16  # a probe, params.yaml untouched

It reads the prepared data and the splits of the last `dvc repro` (`dvc repro split` makes them)
and trains exactly as the `train` stage does, but writes nowhere DVC looks: weights, logs and
checkpoints go to a scratch folder (`--out`), so an interrupted probe resumes there. Prints the
best epoch's validation accuracy and the test accuracy without and with flip TTA. The README's
single-fold figures come from here.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from tasks import evaluate, train
from tasks.config import PARAMS_FILE, parse_params
from tasks.models import check_names
from tasks.paths import Paths
from tasks.tables import read_test


def with_overrides(sets: list[str]) -> dict:
    """params.yaml with `section.key=value` overrides (values read as YAML, as `dvc exp run -S` does)."""
    raw = yaml.safe_load(PARAMS_FILE.read_text())
    for item in sets:
        key, _, value = item.partition("=")
        *sections, leaf = key.split(".")
        node = raw
        for section in sections:
            node = node[section]
        node[leaf] = yaml.safe_load(value)
    return raw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("fold", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=Path("/tmp/one_fold"), help="scratch folder")
    args = parser.parse_args()
    params = parse_params(with_overrides(args.set), f"{PARAMS_FILE} with {args.set}")
    check_names([args.model])

    project, scratch = Paths(), Paths(args.out)
    for source, link in ((project.prepared, scratch.prepared), (project.splits, scratch.splits)):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(source.resolve(), target_is_directory=True)
    started = time.perf_counter()
    metrics = train.train_fold(args.model, args.fold, params.base.seed, params.train, params.augment, scratch)
    minutes = (time.perf_counter() - started) / 60

    model, config = evaluate.load_model(scratch.fold_dir(args.model, args.fold) / "weights.pt")
    test = read_test(project.prepared_test)
    device = train.pick_device(params.evaluate.device)
    accuracy = {}
    for tta in (False, True):
        probs = evaluate.predict(model, config, test.pixels, params.evaluate.model_copy(update={"tta_flip": tta}),
                                 device)
        accuracy[tta] = float((probs.argmax(1) == test.labels).mean())
    print(f"{args.model} fold {args.fold} ({', '.join(args.set) or 'params.yaml'}), {metrics['epochs']} epochs "
          f"on {metrics['device']} ({torch.__version__}), {minutes:.1f} min: validation {metrics['val_acc']:.2%} "
          f"(best epoch {metrics['best_epoch']}), test {accuracy[False]:.2%}, {accuracy[True]:.2%} with flip TTA")


if __name__ == "__main__":
    main()
