import pytest
import torch
from torch import nn

from tasks.models import MODELS, build_model, count_parameters, l2_kernels, l2_penalty


@pytest.mark.parametrize(("name", "parameters"), [
    ("ann", 12_230_010),  # 3072*3000+3000 + 3000*1000+1000 + 1000*10+10
    ("cnn", 815_018),
    ("cnn_blog", 620_810),
    ("resnet18", 11_173_962),
    ("vgg11_bn", 9_231_114),
])
def test_parameter_counts_and_output_shape(name, parameters):
    model = build_model(name, 10, 32)
    assert count_parameters(model) == parameters
    model.eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_registry_lists_every_model_and_rejects_unknown_names():
    assert set(MODELS) == {"ann", "cnn", "cnn_blog", "resnet18", "vgg11_bn"}
    with pytest.raises(KeyError, match="unknown model 'mlp'; valid: \\['ann'"):
        build_model("mlp", 10, 32)


@pytest.mark.parametrize(("activation", "module"), [("relu", nn.ReLU), ("gelu", nn.GELU), ("silu", nn.SiLU)])
def test_activation_is_configurable(activation, module):
    for name in ("ann", "cnn", "cnn_blog"):
        kinds = {type(m) for m in build_model(name, 10, 32, activation).modules()}
        assert module in kinds and not ({nn.ReLU, nn.GELU, nn.SiLU} - {module}) & kinds


def test_cnn_blocks_follow_the_notebook():
    model = build_model("cnn", 10, 32)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.23, 0.23, 0.23, 0.5]


def test_other_image_sizes_and_class_counts():
    for name in ("ann", "cnn", "cnn_blog"):
        assert build_model(name, 3, 16)(torch.zeros(1, 3, 16, 16)).shape == (1, 3)


def test_l2_penalty_on_a_known_kernel():
    model = build_model("cnn_blog", 10, 32)
    kernels = l2_kernels(model)
    assert len(kernels) == 4  # three convs and the hidden dense layer; not the output layer
    with torch.no_grad():
        for k in kernels:
            k.fill_(0.5)
        model[-1].weight.fill_(100.0)  # the output layer must not count
    count = sum(k.numel() for k in kernels)
    assert l2_penalty(model, 1e-3).item() == pytest.approx(1e-3 * 0.25 * count)
    assert l2_penalty(model, 0.0).item() == 0.0


@pytest.mark.parametrize("name", ["ann", "cnn", "cnn_blog"])
def test_dropout_false_turns_every_dropout_layer_off_and_nothing_else(name):
    with_dropout, without = build_model(name, 10, 32), build_model(name, 10, 32, dropout=False)
    rates = [m.p for m in without.modules() if isinstance(m, torch.nn.Dropout)]
    assert all(p == 0.0 for p in rates)
    assert [type(m) for m in with_dropout.modules()] == [type(m) for m in without.modules()]
    if name != "ann":  # the study's CNNs have dropout layers, the MLP none
        assert rates and all(m.p > 0 for m in with_dropout.modules() if isinstance(m, torch.nn.Dropout))
    # Without dropout, training mode is deterministic: two forward passes agree.
    without.train()
    x = torch.rand(4, 3, 32, 32)
    assert torch.equal(without(x), without(x))
