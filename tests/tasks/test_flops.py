from tasks.flops import forward_flops


def test_a_dense_network_costs_two_flops_per_weight():
    # ann: 3072 -> 3000 -> 1000 -> 10, one multiply-add (two FLOPs) per weight; biases and ReLUs uncounted.
    assert forward_flops("ann") == 2 * (3072 * 3000 + 3000 * 1000 + 1000 * 10)


def test_models_order_as_their_training_times_do():
    flops = {name: forward_flops(name) for name in ("ann", "cnn", "cnn_blog", "resnet18", "vgg11_bn")}
    assert flops["resnet18"] > flops["vgg11_bn"] > flops["cnn"] > max(flops["cnn_blog"], flops["ann"])
    assert forward_flops("cnn", image_size=16) < flops["cnn"]  # the image size is the one asked for
