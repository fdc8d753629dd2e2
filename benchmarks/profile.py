"""Where a training step's time goes: torch.profiler's CPU self time, grouped by what each op does.

``python -m benchmarks profile [--model mobilenetv2] [--bf16] [--channels-last] [--batch 3840]``: one network
at width 0.25, batch 256 (the `step` benchmark's step; 3,840 is the `mini` 30k step), a few profiled steps
after warm-up. Convolutions are told
apart by their weight's shape (depthwise: one input channel per group; pointwise: 1x1; dense: the rest), so
the table says how much of the step is depthwise convs, BatchNorm, ReLU, layout or dtype copies, the
optimizer, and what else.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from torch.profiler import ProfilerActivity, profile

from benchmarks.common import table, warm_up, write_result
from benchmarks.dreg_overhead import training_step

CONV_OPS = {"aten::mkldnn_convolution": "fwd", "aten::convolution_backward": "bwd", "aten::_convolution": "fwd"}
GROUPS = {
    "aten::native_batch_norm": "BatchNorm fwd",
    "aten::_batch_norm_with_update": "BatchNorm fwd",
    "aten::native_batch_norm_backward": "BatchNorm bwd",
    "aten::batch_norm_backward": "BatchNorm bwd",
    "aten::clamp_min": "ReLU fwd",
    "aten::relu": "ReLU fwd",
    "aten::threshold_backward": "ReLU bwd",
    "aten::copy_": "layout / dtype copies",
    "aten::_to_copy": "layout / dtype copies",
    "aten::add": "adds (residuals, gradient sums)",
    "aten::add_": "adds (residuals, gradient sums)",
}


def conv_kind(weight_shape: list[int]) -> str:
    """depthwise (one input channel per group, 3x3), pointwise (1x1) or dense, from the weight's shape."""
    _, per_group, kh, kw = weight_shape
    if kh == kw == 1:
        return "pointwise (1x1) conv"
    return "depthwise conv" if per_group == 1 else "dense conv"


def group(name: str, shapes: list[list[int]]) -> str:
    if name in CONV_OPS:
        weight = shapes[1] if name == "aten::mkldnn_convolution" or name == "aten::_convolution" else shapes[2]
        return f"{conv_kind(weight)} {CONV_OPS[name]}" if len(weight) == 4 else f"conv {CONV_OPS[name]}"
    if name.startswith("Optimizer.") or "_foreach" in name:
        return "optimizer"
    return GROUPS.get(name, "other")


def run(opts: argparse.Namespace) -> dict:
    model = opts.model
    width, batch, steps = (0.0625, 32, 1) if opts.quick else (0.25, opts.batch, 3)
    _, _, step = training_step(model, width, None, batch, opts, num_classes=10)
    warm_up(step, calls=3 if batch <= 1024 else 1)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    seconds: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.device_type.name == "CPU":
            seconds[group(event.name, event.input_shapes)] += event.self_cpu_time_total / 1e6 / steps
    total = sum(seconds.values())
    rows = [
        {"part": k, "ms_per_step": 1e3 * v, "share": v / total}
        for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])
    ]
    print(f"{model} width {width:g}, batch {batch}, bf16 {opts.bf16}, channels_last {opts.channels_last}: "
          f"{1e3 * total:.0f} ms of op self time per step")  # fmt: skip
    print(table(rows, ["part", "ms_per_step", "share"]))
    result = {"model": model, "width": width, "batch": batch, "steps": steps, "rows": rows}
    write_result(opts, f"profile-{model}" + (f"-{opts.batch}" if opts.batch != 256 else ""), result)
    return result
