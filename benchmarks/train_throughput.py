"""Training throughput per model and batch size: the bare step against the real loop.

    python -m benchmarks.train_throughput [--models cnn ann] [--batch-sizes 32 128] [--steps 30]

"bare": forward + backward + optimizer step on a fixed random batch already on the device.
"loop": `tasks.train.train_one_epoch` itself on random uint8 images: indexing into the resident
training tensor, per-image augmentation (params.yaml's `augment`), scaling, loss, logging sums.
Prints images/s for both and their ratio; it never fails on slowness.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from tasks.config import load_params
from tasks.models import build_model
from tasks.train import FoldData, make_optimizer, make_scheduler, pick_device, train_one_epoch


def fake_fold(n: int, size: int, device: torch.device) -> FoldData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)
    ones = torch.ones(1, 3, 1, 1, device=device)
    return FoldData(
        images=images.permute(0, 3, 1, 2).to(device), labels=torch.randint(0, 10, (n,), generator=g).to(device),
        train_index=torch.arange(n, device=device), val_index=torch.arange(0, device=device),
        class_weights=torch.ones(10, device=device), classes=[str(i) for i in range(10)],
        mean=ones * 0.5, std=ones * 0.25,
    )


def bare_step(model, optimizer, x, y, steps: int) -> float:
    for i in range(steps + 3):
        if i == 3:  # warm-up done
            started = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return steps * len(x) / (time.perf_counter() - started)


def measure(models: list[str], batch_sizes: list[int], steps: int) -> Iterator[dict]:
    """Images/s of the bare step and of the real loop, per model and batch size, as measured."""
    params = load_params()
    device = pick_device(params.train.device)
    size = params.data.image_size
    for name in models:
        for batch in batch_sizes:
            p = params.train.model_copy(update={"batch_size": batch, "epochs": 1})
            torch.manual_seed(0)
            model = build_model(name, 10, size, p.activation).to(device, memory_format=torch.channels_last)
            optimizer = make_optimizer(model, p)
            x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch,), device=device)
            bare = bare_step(model, optimizer, x, y, steps)
            data = fake_fold(batch * steps, size, device)
            scheduler, per_batch = make_scheduler(optimizer, p, steps)
            generator = torch.Generator(device=device).manual_seed(0)
            train_one_epoch(model, fake_fold(batch * 3, size, device), optimizer, scheduler, per_batch, p,
                            params.augment, generator)  # warm-up
            scheduler, per_batch = make_scheduler(optimizer, p, steps)
            started = time.perf_counter()
            train_one_epoch(model, data, optimizer, scheduler, per_batch, p, params.augment, generator)
            loop = batch * steps / (time.perf_counter() - started)
            yield {"model": name, "batch": batch, "bare": bare, "loop": loop}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn_blog", "cnn", "ann"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 128])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    params = load_params()
    print(f"device {pick_device(params.train.device)}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, augment {'on' if params.augment.enabled else 'off'}")
    print(f"{'model':10} {'batch':>5} {'bare img/s':>11} {'loop img/s':>11} {'loop/bare':>9}")
    for row in measure(args.models, args.batch_sizes, args.steps):
        print(f"{row['model']:10} {row['batch']:5d} {row['bare']:11.0f} {row['loop']:11.0f} "
              f"{row['loop'] / row['bare']:9.0%}", flush=True)


if __name__ == "__main__":
    main()
