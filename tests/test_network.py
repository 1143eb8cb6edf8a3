import itertools

import pytest
import torch

from src_core import DIPError, NetworkConfig, build_network, count_parameters


def test_standard_configuration_parameter_count():
    # 32 input channels, 1 output, [128]*5 down/up, skip [4]*5: the original skip net.
    net = build_network(NetworkConfig(input_channels=32, scales=5, down_channels=128,
                                      up_channels=128, skip_channels=4), output_channels=1)
    assert count_parameters(net) == 2_217_573


def test_output_shape_and_range():
    net = build_network(NetworkConfig(scales=3, down_channels=8, up_channels=8, skip_channels=2), 3)
    out = net(torch.rand(1, 32, 64, 48))
    assert out.shape == (1, 3, 64, 48)
    assert float(out.min()) >= 0 and float(out.max()) <= 1


@pytest.mark.parametrize("upsample,downsample,activation,padding",
                         list(itertools.product(["nearest", "bilinear"],
                                           ["stride", "avg", "max", "lanczos2", "lanczos3"],
                                           ["leaky_relu", "swish", "elu", "none"],
                                           ["reflection", "zero"])))
def test_every_option_builds_runs_and_backpropagates(upsample, downsample, activation, padding):
    cfg = NetworkConfig(scales=2, input_channels=4, down_channels=[6, 8], up_channels=[5, 7],
                        skip_channels=[3, 0], down_kernel=[3, 5], up_kernel=3, skip_kernel=[1, 3],
                        upsample=upsample, downsample=downsample, activation=activation,
                        padding=padding)
    net = build_network(cfg, output_channels=2)
    out = net(torch.rand(1, 4, 32, 32))
    assert out.shape == (1, 2, 32, 32)
    out.mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("flags", [dict(conv_after_join=False), dict(sigmoid=False), dict(bias=False)])
def test_switches_change_the_network(flags):
    base = NetworkConfig(scales=2, down_channels=8, up_channels=8, skip_channels=2)
    changed = NetworkConfig(**{**base.to_dict(), **flags})
    torch.manual_seed(0)
    n0 = build_network(base, 1)
    torch.manual_seed(0)
    n1 = build_network(changed, 1)
    if "sigmoid" in flags:
        z = torch.rand(1, 32, 16, 16)
        assert torch.allclose(n0(z), torch.sigmoid(n1(z)), atol=1e-6)
    else:
        assert count_parameters(n1) < count_parameters(n0)


def test_lanczos_filter_is_fixed_not_learned():
    stride = NetworkConfig(scales=2, down_channels=8, up_channels=8, downsample="stride")
    lanczos = NetworkConfig(scales=2, down_channels=8, up_channels=8, downsample="lanczos2")
    assert count_parameters(build_network(stride, 1)) == count_parameters(build_network(lanczos, 1))


def test_zero_skip_removes_the_branch():
    with_skip = build_network(NetworkConfig(scales=2, down_channels=8, up_channels=8, skip_channels=4), 1)
    without = build_network(NetworkConfig(scales=2, down_channels=8, up_channels=8, skip_channels=[0, 4]), 1)
    assert with_skip.body.skip is not None and without.body.skip is None


def test_batchnorm_keeps_no_running_statistics():
    net = build_network(NetworkConfig(scales=2, down_channels=8, up_channels=8), 1)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.running_mean is None for m in bns)


@pytest.mark.parametrize("kwargs,words", [
    (dict(scales=0), "scales"),
    (dict(scales=3, down_channels=[8, 8]), "down_channels has 2 entries"),
    (dict(scales=2, skip_channels=[4, 4, 4]), "skip_channels has 3 entries"),
    (dict(down_kernel=4), "odd"),
    (dict(upsample="cubic"), "upsample"),
    (dict(downsample="bicubic"), "downsample"),
    (dict(activation="relu6"), "activation"),
    (dict(padding="circular"), "padding"),
    (dict(up_channels=0), "up_channels"),
])
def test_inconsistent_network_settings_are_refused(kwargs, words):
    with pytest.raises(DIPError, match=words):
        build_network(NetworkConfig(**kwargs), 1)


def test_min_size_depends_on_depth():
    assert NetworkConfig(scales=5).min_size() == 64
    assert NetworkConfig(scales=2).min_size() == 8
    assert NetworkConfig(scales=5, padding="zero").min_size() == 32
