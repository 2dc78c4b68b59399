"""Batched, per-image data augmentation on the training device.

Every image in a batch gets its own random draw (torchvision's v2 transforms draw one per call,
so a batch would share one rotation). Two cheap steps and one general one:
- random translation by whole pixels with reflection padding (the usual "random crop"), and
  horizontal flip: one gather, no interpolation;
- the study's Keras-style affine (rotation, shift, shear, zoom per axis) as one 2x3 matrix per
  image, applied with `affine_grid` + `grid_sample`; skipped when every range is zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.config import AugmentParams

PADDING_MODES = {"nearest": "border", "reflect": "reflection", "zeros": "zeros"}


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device) * (high - low) + low


def crop_and_flip(x: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator):
    """Shift each image by its own whole-pixel offset in [-padding, padding] (reflection padding
    fills the border) and mirror it with probability 0.5, in one indexing operation."""
    n, _, h, w = x.shape
    dev = x.device
    rows = torch.arange(h, device=dev).expand(n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    if padding:
        x = F.pad(x, (padding,) * 4, mode="reflect")
        offsets = torch.randint(0, 2 * padding + 1, (2, n, 1), generator=generator, device=dev)
        rows, cols = rows + offsets[0], cols + offsets[1]
    if hflip:
        flip = torch.rand(n, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
    if not padding and not hflip:
        return x
    batch = torch.arange(n, device=dev)[:, None, None]
    # Advanced indexing puts the gathered axes first: (n, h, w, c) -> back to (n, c, h, w).
    return x.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def affine_matrices(n: int, params: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """(n, 2, 3) matrices mapping output to input coordinates, as `affine_grid` wants.

    Composed like Keras' ImageDataGenerator: rotation @ shear @ zoom, plus a shift; zoom below 1
    magnifies. Angles are in degrees; shifts are fractions of the image size.
    """
    angle = torch.deg2rad(_uniform(n, -params.rotation, params.rotation, generator))
    shear = torch.deg2rad(_uniform(n, -params.shear, params.shear, generator))
    zx = _uniform(n, 1 - params.zoom, 1 + params.zoom, generator)
    zy = _uniform(n, 1 - params.zoom, 1 + params.zoom, generator)
    # affine_grid's coordinates run from -1 to 1, so a shift of f image widths is 2f.
    tx = 2 * _uniform(n, -params.shift, params.shift, generator)
    ty = 2 * _uniform(n, -params.shift, params.shift, generator)
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.stack([cos, -sin, sin, cos], 1).view(n, 2, 2)
    shearing = torch.stack([torch.ones_like(shear), -torch.sin(shear),
                            torch.zeros_like(shear), torch.cos(shear)], 1).view(n, 2, 2)
    zoom = torch.diag_embed(torch.stack([zx, zy], 1))
    return torch.cat([rotation @ shearing @ zoom, torch.stack([tx, ty], 1)[:, :, None]], 2)


def has_affine(params: AugmentParams) -> bool:
    return any((params.rotation, params.shift, params.shear, params.zoom))


def warp(x: torch.Tensor, theta: torch.Tensor, fill: str) -> torch.Tensor:
    """Resample each image through its (2, 3) matrix; `fill` says what uncovered pixels become."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=PADDING_MODES[fill], align_corners=False)


def random_affine(x: torch.Tensor, params: AugmentParams, generator: torch.Generator):
    return warp(x, affine_matrices(len(x), params, generator), params.fill)


def augment(x: torch.Tensor, params: AugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch (N, C, H, W) with values in [0, 1]; identity when disabled."""
    if not params.enabled:
        return x
    x = crop_and_flip(x, params.crop_padding, params.hflip, generator)
    if has_affine(params):
        x = random_affine(x, params, generator)
    return x
