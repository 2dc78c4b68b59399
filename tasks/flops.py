"""How much compute a registered model costs per image: the floating-point operations of one
forward pass, counted by PyTorch's own FLOP counter (`torch.utils.flop_counter`).

The progression's queue starts its costliest experiments first (flows/progression.py): with
several queue workers, a slow experiment that starts last keeps one worker busy long after the
others are idle. Training costs a fixed multiple of the forward pass, so the forward FLOPs order
the models as their training times do (ResNet-18 about 14 times the study's CNN).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tasks.models import build_model


def forward_flops(name: str, image_size: int = 32, classes: int = 10) -> int:
    """FLOPs of one forward pass of model `name` on one image (a multiply-add counts as two)."""
    model = build_model(name, classes, image_size).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    return int(counter.get_total_flops())
