import math

import pytest
import torch

from tasks.augment import affine_matrices, augment, crop_and_flip, warp
from tests.conftest import with_changes


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def numbered_images(n, size=8):
    """Every pixel distinct, so a moved or mirrored image can be traced back."""
    base = torch.arange(size * size, dtype=torch.float32).view(1, 1, size, size)
    return base.repeat(n, 3, 1, 1)


def only(params, **changes):
    none = {"rotation": 0.0, "shift": 0.0, "shear": 0.0, "zoom": 0.0, "hflip": False, "crop_padding": 0}
    return with_changes(params, augment={**none, **changes}).augment


def test_each_image_in_a_batch_gets_its_own_draw(params):
    x = numbered_images(16)
    out = augment(x / 64, only(params, rotation=30.0, zoom=0.2), generator())
    assert len({tuple(img.flatten().tolist()) for img in out}) == 16


def test_rotation_angles_stay_in_range_and_vary(params):
    theta = affine_matrices(2000, only(params, rotation=20.0), generator())
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0], theta[:, 0, 0]))
    assert angles.abs().max() <= 20.0 + 1e-4 and angles.std() > 10
    assert torch.allclose(theta[:, :, 2], torch.zeros(2000, 2))


def test_zoom_draws_each_axis_on_its_own_and_shift_in_range(params):
    theta = affine_matrices(2000, only(params, zoom=0.2, shift=0.1), generator())
    zx, zy = theta[:, 0, 0], theta[:, 1, 1]
    assert zx.min() >= 0.8 and zx.max() <= 1.2 and not torch.allclose(zx, zy)
    assert theta[:, :, 2].abs().max() <= 0.2 + 1e-6  # 0.1 of the size = 0.2 in [-1, 1] units


def test_crop_moves_whole_pixels_within_padding(params):
    x = numbered_images(64)
    out = crop_and_flip(x, 2, hflip=False, generator=generator())
    for img in out[:, 0]:
        interior = img[2:-2, 2:-2]  # untouched by the reflected border for any shift of <= 2
        row, col = divmod(int(interior[0, 0].item()), 8)  # where the interior's corner came from
        dy, dx = row - 2, col - 2
        assert abs(dy) <= 2 and abs(dx) <= 2
        assert torch.equal(interior, x[0, 0, 2 + dy:6 + dy, 2 + dx:6 + dx])


def test_flip_mirrors_about_half_the_images(params):
    x = numbered_images(1000)
    out = crop_and_flip(x, 0, hflip=True, generator=generator())
    flipped = (out == x.flip(3)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert torch.all(flipped ^ kept) and 400 < flipped.sum() < 600


@pytest.mark.parametrize(("fill", "row"), [
    ("nearest", [3.0, 4.0, 4.0, 4.0]),  # the border column repeats (Keras' fill_mode="nearest")
    ("reflect", [3.0, 4.0, 4.0, 3.0]),  # mirrored about the edge
    ("zeros", [3.0, 4.0, 0.0, 0.0]),
])
def test_fill_modes_on_a_fixed_shift(fill, row):
    x = torch.arange(1, 5.0).repeat(4, 1).view(1, 1, 4, 4)  # every row is 1 2 3 4
    # Output -> input: sample 1.0 to the right in [-1, 1] units, i.e. two of the four pixels.
    theta = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    out = warp(x, theta, fill)
    assert out[0, 0].tolist() == [row] * 4


def test_disabled_augmentation_is_the_identity(params):
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(augment(x, with_changes(params, augment={"enabled": False}).augment, generator()), x)


def test_same_seed_same_augmentation(params):
    x = torch.rand(8, 3, 8, 8)
    p = only(params, rotation=10.0, crop_padding=2, hflip=True)
    assert torch.equal(augment(x, p, generator(5)), augment(x, p, generator(5)))
    assert not torch.equal(augment(x, p, generator(5)), augment(x, p, generator(6)))


@pytest.mark.parametrize("fill", ["nearest", "reflect", "zeros"])
def test_fill_modes_keep_values_in_range(params, fill):
    x = torch.rand(8, 3, 8, 8)
    out = augment(x, with_changes(params, augment={"rotation": 45.0, "fill": fill}).augment, generator())
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6 and math.isfinite(out.sum().item())
