"""The three CIFAR networks: sizes, shapes, width scaling, DReg sites, fx tracing, init, and bad arguments."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_modules.nets import build_net, dreg_sites

NAMES = ["vgg16", "resnet18", "mobilenetv2"]
N_SITES = {"vgg16": 5, "resnet18": 4, "mobilenetv2": 7}


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def convs3x3(net: nn.Module) -> list[str]:
    """Paths of the 3x3 convs in `named_modules` order."""
    return [p for p, m in net.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]


@pytest.mark.parametrize(
    ("name", "num_classes", "millions"),
    [
        ("vgg16", 10, 14.72),
        ("resnet18", 10, 11.17),
        ("mobilenetv2", 10, 2.30),
        ("vgg16", 100, 14.77),
        ("resnet18", 100, 11.22),
        ("mobilenetv2", 100, 2.41),
    ],
)
def test_parameter_count_at_width_1(name: str, num_classes: int, millions: float) -> None:
    assert n_params(build_net(name, num_classes)) == pytest.approx(millions * 1e6, rel=0.005)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", [0.25, 0.01])  # 0.01: every stage at the 4-channel floor
def test_forward_shape(name: str, width: float) -> None:
    torch.manual_seed(0)
    net = build_net(name, 7, width=width)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_width_scales_every_channel_count(name: str) -> None:
    full, quarter = build_net(name, 10), build_net(name, 10, width=0.25)
    convs = [(p, m) for p, m in full.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) >= 13
    for path, conv in convs:
        small = quarter.get_submodule(path)
        if name == "mobilenetv2" and conv.groups > 1:  # depthwise: as wide as its (scaled) input
            assert small.out_channels == small.in_channels == small.groups, path
        elif name == "mobilenetv2" and path.count(".") == 2 and path.endswith(".conv1"):  # t x expansion
            t = conv.out_channels // conv.in_channels
            assert small.out_channels == t * small.in_channels, path
        else:
            assert small.out_channels == max(4, round(conv.out_channels * 0.25)), path
    assert quarter.fc.in_features == max(4, round(full.fc.in_features * 0.25))


@pytest.mark.parametrize("name", NAMES)
def test_tiny_width_keeps_at_least_4_channels(name: str) -> None:
    tiny = build_net(name, 10, width=0.01)
    channels = [m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)]
    assert min(channels) == 4
    assert tiny(torch.randn(1, 3, 32, 32)).shape == (1, 10)


@pytest.mark.parametrize("name", NAMES)
def test_dreg_sites_are_the_last_3x3_conv_of_each_stage_in_reverse(name: str) -> None:
    net = build_net(name, 10, width=0.25)
    sites = dreg_sites(net)
    n = N_SITES[name]
    assert list(sites) == [f"R{k}" for k in range(1, n + 1)]
    for path in sites.values():
        conv = net.get_submodule(path)
        assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
        if name == "mobilenetv2":
            assert conv.groups == conv.in_channels == conv.out_channels > 1
    order = convs3x3(net)
    assert sites["R1"] == order[-1]
    positions = [order.index(p) for p in sites.values()]
    assert positions == sorted(positions, reverse=True)
    # Rk is the last 3x3 conv of the k-th stage from the end (stage = top-level `layerK`).
    last_by_stage: dict[str, str] = {}
    for path in order:
        if path.startswith("layer"):
            last_by_stage[path.split(".")[0]] = path
    assert list(sites.values()) == list(reversed(last_by_stage.values()))


def test_resnet18_sites_by_name() -> None:
    assert dreg_sites(build_net("resnet18", 10, width=0.25)) == {
        "R1": "layer4.1.conv2",
        "R2": "layer3.1.conv2",
        "R3": "layer2.1.conv2",
        "R4": "layer1.1.conv2",
    }


def test_dreg_sites_of_an_unknown_net_is_a_one_line_value_error() -> None:
    with pytest.raises(ValueError, match="Sequential has no named DReg sites") as info:
        dreg_sites(nn.Sequential(nn.Conv2d(3, 4, 3)))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_fx_trace_matches_and_each_site_feeds_only_its_batchnorm(name: str) -> None:
    torch.manual_seed(0)
    net = build_net(name, 10, width=0.25).eval()
    traced = torch.fx.symbolic_trace(net)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(traced(x), net(x))
    calls = [node.target for node in traced.graph.nodes if node.op == "call_module"]
    assert len(calls) == len(set(calls)), "a module is called more than once per forward"
    nodes = {node.target: node for node in traced.graph.nodes if node.op == "call_module"}
    for path in dreg_sites(net).values():
        users = list(nodes[path].users)
        assert len(users) == 1 and users[0].op == "call_module"
        assert isinstance(traced.get_submodule(users[0].target), nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("name", "path"),
    [("vgg16", "layer5.2.conv"), ("resnet18", "layer4.1.conv2"), ("mobilenetv2", "layer7.0.conv2")],
)
def test_he_init(name: str, path: str) -> None:
    torch.manual_seed(0)
    net = build_net(name, 10)
    conv = net.get_submodule(path)
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert conv.weight.mean().abs().item() < 0.05 * math.sqrt(2 / fan_out)
    bn = net.get_submodule(dreg_sites(net)["R2"].replace("conv", "bn"))
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and not bn.bias.any()
    assert net.fc.weight.std().item() == pytest.approx(0.01, rel=0.1) and not net.fc.bias.any()


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"name": "resnet50", "num_classes": 10}, "'resnet50'"),
        ({"name": "", "num_classes": 10}, "''"),
        ({"name": "vgg16", "num_classes": 1}, "got 1"),
        ({"name": "vgg16", "num_classes": 10.0}, "got 10.0"),
        ({"name": "vgg16", "num_classes": 10, "width": 0}, "got 0"),
        ({"name": "vgg16", "num_classes": 10, "width": -0.5}, "got -0.5"),
        ({"name": "vgg16", "num_classes": 10, "width": float("nan")}, "got nan"),
    ],
)
def test_bad_arguments_raise_one_line_value_error(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError) as info:
        build_net(**kwargs)
    message = str(info.value)
    assert bad in message and "\n" not in message
    if kwargs["name"] not in NAMES:
        assert all(repr(valid) in message for valid in NAMES)


def test_names_are_case_insensitive() -> None:
    assert type(build_net("ResNet18", 10, width=0.1)) is type(build_net("resnet18", 10, width=0.1))
    assert type(build_net("MobileNet_V2", 10, width=0.1)).__name__ == "MobileNetV2"
