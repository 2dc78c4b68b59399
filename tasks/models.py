"""Model registry: adding a model is one builder function under one `@register` name.

Every builder takes (classes, image_size, activation) and returns an `nn.Module` that maps a
float batch (N, 3, S, S) to logits (N, classes). Softmax lives in the loss, as usual in PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from tasks.config import PARAMS_FILE, ParamsError

Builder = Callable[[int, int, str], nn.Module]
MODELS: dict[str, Builder] = {}
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def register(name: str) -> Callable[[Builder], Builder]:
    def add(builder: Builder) -> Builder:
        MODELS[name] = builder
        return builder

    return add


def check_names(names: Iterable[str], origin: str = str(PARAMS_FILE)) -> None:
    """`train.models` against the registry, with the error every invalid parameter gets."""
    names = list(names)
    unknown = [name for name in names if name not in MODELS]
    if unknown:
        raise ParamsError(f"{origin}: invalid parameters:\n  train.models = {list(names)!r}: "
                          f"unknown model {unknown}; valid: {sorted(MODELS)}")


def build_model(name: str, classes: int, image_size: int, activation: str = "relu",
                dropout: bool = True) -> nn.Module:
    """A registered model; `dropout=False` sets every dropout layer's p to 0 (`train.dropout`),
    so one parameter measures what dropout is worth for any model without a second builder."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; valid: {sorted(MODELS)}")
    model = MODELS[name](classes, image_size, activation)
    if not dropout:
        for layer in model.modules():
            if isinstance(layer, nn.Dropout):
                layer.p = 0.0
    return model


@register("ann")
def ann(classes: int, image_size: int, activation: str) -> nn.Module:
    """The study's multilayer perceptron: 3072 -> 3000 -> 1000 -> classes."""
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(3 * image_size * image_size, 3000), act(),
        nn.Linear(3000, 1000), act(),
        nn.Linear(1000, classes),
    )


def _conv_block(c_in: int, c_out: int, convs: int, dropout: float, act: type[nn.Module]):
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), act(), nn.BatchNorm2d(c_out)]
    return [*layers, nn.MaxPool2d(2), nn.Dropout(dropout)]


def _study_cnn(classes: int, image_size: int, activation: str, convs: int, dropout: float):
    act = ACTIVATIONS[activation]
    widths = (3, 32, 64, 128)
    blocks = [
        layer
        for c_in, c_out in zip(widths, widths[1:], strict=False)
        for layer in _conv_block(c_in, c_out, convs, dropout, act)
    ]
    side = image_size // 8  # three 2x2 max-pools
    return nn.Sequential(
        *blocks,
        nn.Flatten(),
        nn.Linear(128 * side * side, 256), act(), nn.Dropout(0.5),
        nn.Linear(256, classes),
    )


@register("cnn")
def cnn(classes: int, image_size: int, activation: str) -> nn.Module:
    """The CNN of the study's notebook (its numbers): two convs per block, dropout 0.23."""
    return _study_cnn(classes, image_size, activation, convs=2, dropout=0.23)


@register("cnn_blog")
def cnn_blog(classes: int, image_size: int, activation: str) -> nn.Module:
    """The "final model" the study's write-up prints: one conv per block, dropout 0.25."""
    return _study_cnn(classes, image_size, activation, convs=1, dropout=0.25)


@register("resnet18")
def resnet18_cifar(classes: int, image_size: int, activation: str) -> nn.Module:
    """torchvision's ResNet-18 the usual CIFAR way: 3x3 stem, no early max-pool."""
    from torchvision.models import resnet18 as tv_resnet18  # importing torchvision costs ~8 s here

    model = tv_resnet18(num_classes=classes)
    model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register("vgg11_bn")
def vgg11_bn_cifar(classes: int, image_size: int, activation: str) -> nn.Module:
    """torchvision's VGG-11 with BatchNorm; at 32x32 its features end at 1x1, so one linear head."""
    from torchvision.models import vgg11_bn as tv_vgg11_bn  # importing torchvision costs ~8 s here

    model = tv_vgg11_bn(num_classes=classes)
    side = image_size // 32
    model.avgpool = nn.Identity()
    model.classifier = nn.Linear(512 * side * side, classes)
    return model


def l2_kernels(model: nn.Module) -> list[torch.Tensor]:
    """Conv and dense kernels that carry the Keras-style L2 penalty: all but the output layer."""
    kernels = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return kernels[:-1]


def l2_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """`strength * sum(w**2)` over `l2_kernels`, as a Keras `kernel_regularizer=l2(strength)` adds."""
    return strength * sum(k.pow(2).sum() for k in l2_kernels(model))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
