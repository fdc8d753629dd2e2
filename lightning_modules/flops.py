"""FLOP counting for a training step, with grouped-conv weight gradients counted right.

``torch.utils.flop_counter`` (checked up to torch 2.14) counts the weight gradient of a grouped
convolution as a dense conv over all input channels, i.e. ``groups`` times too high; a depthwise
conv's backward then dominates MobileNetV2's count (docs/method.md §6). ``conv_backward_flop`` replaces that
formula: grad_input and grad_weight each take exactly the multiply-adds of the forward conv (every
(output element, weight element) pair meets once in each), which holds for any stride, padding and
groups. Counting runs on the meta device, so it needs no memory and takes milliseconds at width 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

from lightning_modules.classifier import Classifier

aten = torch.ops.aten


def conv_backward_flop(
    grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, _output_padding, _groups,
    output_mask, out_shape=None, **kwargs,
) -> int:  # fmt: skip
    """FLOPs of ``aten.convolution_backward``: the forward conv's count once per gradient asked for."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def counter() -> FlopCounterMode:
    """A FlopCounterMode with the corrected convolution-backward formula."""
    return FlopCounterMode(display=False, custom_mapping={aten.convolution_backward: conv_backward_flop})


def count(fn: Callable[[], object], corrected: bool = True) -> int:
    """Conv and matmul FLOPs (a multiply-add counts 2) of running ``fn()``."""
    mode = counter() if corrected else FlopCounterMode(display=False)
    with mode:
        fn()
    return mode.get_total_flops()


def depthwise_probe() -> dict[str, int]:
    """A depthwise conv's fwd+bwd FLOPs: the hand count, the upstream count, the corrected count.

    Forward, grad_input and grad_weight are each ``2 * N * C * H * W * 9`` multiply-adds.
    """
    n, c, h, w = 2, 8, 5, 5
    conv = nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False)
    x = torch.randn(n, c, h, w, requires_grad=True)

    def step() -> None:
        conv(x).sum().backward()

    return {"hand": 3 * 2 * n * c * h * w * 9, "upstream": count(step, corrected=False), "corrected": count(step)}


def step_flops(
    model: str, site: str | None, width: float = 1.0, num_classes: int = 10, batch: int = 2, train: bool = True
) -> float:
    """Per-image FLOPs of the suite's training step (forward + backward of ``Classifier._loss_terms``),
    or of one evaluation forward (``train=False``; both paths for DReg), counted on the meta device."""
    with torch.device("meta"):
        module = Classifier(model=model, num_classes=num_classes, width=width, dreg_site=site)
        x = torch.randn(batch, 3, 32, 32)
        y = torch.zeros(batch, dtype=torch.long)

    def run() -> None:
        if train:
            module._loss_terms(x, y)["loss"].backward()
        else:
            with torch.no_grad():
                module(x)

    module.train(train)
    return count(run) / batch
