"""The training step of each network through the suite in fp32, channels_last, bf16, and bf16 + channels_last.

A step is ``Classifier._loss_terms`` forward and backward and the optimizer step
(``benchmarks.dreg_overhead.training_step``) at width 0.25 and batch 256, the `mini` preset's networks,
on a fixed random batch. The three variants of one network alternate in one process after warm-up; the
table gives each one's median step time with its 95% interval, the speed-up over fp32 (median of the
paired ratios, 95% interval) and the FLOP rate (``lightning_modules.flops``, grouped convs counted right).
MobileNetV2's rate against ResNet18's is the measure of how far its depthwise convs fall behind: before,
both in bf16 + channels_last; after, MobileNetV2 in the layout the `mini` preset gives it (``by_model``
in experiments/presets.yaml: NCHW, where BatchNorm's backward is ~4x faster at its channel counts).
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

from benchmarks.common import QUICK_WIDTH, interleaved, ratios, summary, table, write_result
from benchmarks.dreg_overhead import training_step
from experiments.config import preset_settings
from lightning_modules import flops

MODELS = ("vgg16", "resnet18", "mobilenetv2")
VARIANTS = {  # name: (bf16 autocast, channels_last)
    "fp32": (False, False),
    "channels_last": (False, True),
    "bf16": (True, False),
    "bf16+channels_last": (True, True),
}


def run(opts: argparse.Namespace) -> dict:
    width, batch, reps = (QUICK_WIDTH, 32, 3) if opts.quick else (0.25, 256, 15)
    rows = []
    times_by_model = {}
    for model in MODELS:
        steps = {}
        for name, (bf16, channels_last) in VARIANTS.items():
            variant = SimpleNamespace(**{**vars(opts), "bf16": bf16, "channels_last": channels_last})
            steps[name] = training_step(model, width, None, batch, variant, num_classes=10)[2]
        times = interleaved(steps, reps=reps, turn_s=0.0)
        times_by_model[model] = times
        gflop = flops.step_flops(model, None, width, num_classes=10) * batch / 1e9
        for name in VARIANTS:
            t, speedup = summary(times[name]), ratios(times, "fp32", name)
            rows.append({
                "model": model, "variant": name, "step_ms": 1e3 * t["median"], "ci_lo_ms": 1e3 * t["ci_lo"],
                "ci_hi_ms": 1e3 * t["ci_hi"], "speedup": speedup["median"], "speedup_ci_lo": speedup["ci_lo"],
                "speedup_ci_hi": speedup["ci_hi"], "gflop_per_s": gflop / t["median"],
            })  # fmt: skip
    print(f"one training step, width {width:g}, batch {batch}, {reps} alternated turns per variant")
    print(table(rows, ["model", "variant", "step_ms", "ci_lo_ms", "ci_hi_ms", "speedup", "speedup_ci_lo",
                       "speedup_ci_hi", "gflop_per_s"]))  # fmt: skip
    rate = {(r["model"], r["variant"]): r["gflop_per_s"] for r in rows}
    relative = {v: rate["mobilenetv2", v] / rate["resnet18", v] for v in VARIANTS}
    print("MobileNetV2's FLOP rate / ResNet18's: " + ", ".join(f"{v} {r:.3f}" for v, r in relative.items()))
    channels_last = preset_settings("mini", "mobilenetv2").get("channels_last", True)
    mini = "bf16+channels_last" if channels_last else "bf16"
    after = rate["mobilenetv2", mini] / rate["resnet18", "bf16+channels_last"]
    before_after = {"before": relative["bf16+channels_last"], "after": after}
    print(f"at the mini preset's settings: before (both bf16 + channels_last) {before_after['before']:.3f}, "
          f"after (MobileNetV2 {mini}) {before_after['after']:.3f}")  # fmt: skip
    result = {"width": width, "batch": batch, "reps": reps, "rows": rows, "times": times_by_model,
              "mobilenetv2_rate_over_resnet18": relative, "mini_before_after": before_after}  # fmt: skip
    write_result(opts, "step", result)
    return result
