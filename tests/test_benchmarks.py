"""The benchmarks: the FLOP-counter correction against hand counts, and each CPU benchmark's --quick run.

The quick runs check that a benchmark runs and writes its JSON record, not its numbers (those depend
on the machine; ``python -m benchmarks all`` measures them).
"""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.__main__ import main
from benchmarks.gpu import paper_grid
from lightning_modules import flops

COMMON_KEYS = {"benchmark", "date", "torch", "device", "cpu_count", "options"}


@pytest.mark.parametrize(
    ("c_in", "c_out", "groups", "stride"),
    [(8, 8, 8, 1), (8, 8, 8, 2), (8, 16, 2, 1), (6, 10, 1, 2)],  # depthwise, strided depthwise, grouped, dense
)
def test_conv_backward_flops_equal_the_hand_count(c_in: int, c_out: int, groups: int, stride: int) -> None:
    """Forward, grad_input and grad_weight each take 2 * N * H_out * W_out * C_out * (C_in / groups) * k * k."""
    n, size, k = 3, 9, 3
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=1, groups=groups, bias=False)
    x = torch.randn(n, c_in, size, size, requires_grad=True)
    out = (size + 2 - k) // stride + 1
    per_pass = 2 * n * out * out * c_out * (c_in // groups) * k * k
    assert flops.count(lambda: conv(x).sum().backward()) == 3 * per_pass
    x.requires_grad_(False)  # no grad_input asked for: forward + grad_weight
    assert flops.count(lambda: conv(x).sum().backward()) == 2 * per_pass


def test_the_probe_sees_what_the_upstream_counter_does() -> None:
    probe = flops.depthwise_probe()
    assert probe["corrected"] == probe["hand"]
    # torch <= 2.14 counts the depthwise weight gradient `groups` (here 8) times: 2 + 8 forward counts.
    assert probe["upstream"] in (probe["hand"], probe["hand"] // 3 * 10)


@pytest.mark.parametrize(
    ("model", "gflops", "r1"), [("vgg16", 1.876, 1.030), ("resnet18", 3.329, 1.068), ("mobilenetv2", 0.545, 1.129)]
)
def test_counted_step_flops_match_spec_section_6(model: str, gflops: float, r1: float) -> None:
    base = flops.step_flops(model, None, 1.0, num_classes=100)
    assert base / 1e9 == pytest.approx(gflops, abs=1.5e-3)
    assert flops.step_flops(model, "R1", 1.0, num_classes=100) / base == pytest.approx(r1, abs=1e-3)


def test_gpu_benchmark_says_it_needs_cuda(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    with pytest.raises(SystemExit, match="needs a CUDA device"):
        main(["gpu", "--out", str(tmp_path)])


def _quick(name: str, out: Path) -> dict:
    main([name, "--quick", "--out", str(out)])
    record = json.loads((out / f"{name}.json").read_text())
    assert set(record) >= COMMON_KEYS and record["benchmark"] == name and record["options"]["quick"]
    return record


@pytest.mark.slow
def test_step_quick(tmp_path: Path) -> None:
    record = _quick("step", tmp_path)
    variants = ["fp32", "channels_last", "bf16", "bf16+channels_last"]
    assert [(r["model"], r["variant"]) for r in record["rows"][:4]] == [("vgg16", v) for v in variants]
    assert len(record["rows"]) == 12 and all(
        r["gflop_per_s"] > 0 and r["ci_lo_ms"] <= r["step_ms"] for r in record["rows"]
    )
    assert record["rows"][0]["speedup"] == 1.0
    assert set(record["mobilenetv2_rate_over_resnet18"]) == {"fp32", "channels_last", "bf16", "bf16+channels_last"}
    assert set(record["mini_before_after"]) == {"before", "after"}


@pytest.mark.slow
def test_profile_quick(tmp_path: Path) -> None:
    main(["profile", "--quick", "--bf16", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "profile-mobilenetv2.json").read_text())
    parts = {r["part"]: r for r in record["rows"]}
    assert {"depthwise conv fwd", "depthwise conv bwd", "pointwise (1x1) conv fwd", "BatchNorm bwd"} <= set(parts)
    assert sum(r["share"] for r in record["rows"]) == pytest.approx(1.0)


@pytest.mark.slow
def test_epoch_quick_against_the_same_code_finds_the_same_records(tmp_path: Path) -> None:
    """Two checkouts of one commit train the same run: the comparison says the records are identical; another
    learning rate (a --variant) gives other records."""
    main(["epoch", "--quick", "--against", "HEAD", "--model", "vgg16", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "epoch-vgg16.json").read_text())
    assert record["same_records"] and [r["epochs"] for r in record["rows"]] == [2, 2]
    assert record["ci"][0] <= record["speedup"] <= record["ci"][1]
    main(["epoch", "--quick", "--variant", "lr=0.05", "--model", "vgg16", "--out", str(tmp_path)])
    record = json.loads((tmp_path / "epoch-vgg16.json").read_text())
    assert [r["code"] for r in record["rows"]] == ["this checkout", "lr=0.05"] and not record["same_records"]


def test_conv_kinds_are_told_apart_by_the_weight() -> None:
    from benchmarks.profile import conv_kind, group

    assert conv_kind([32, 1, 3, 3]) == "depthwise conv"
    assert conv_kind([64, 32, 1, 1]) == "pointwise (1x1) conv"
    assert conv_kind([64, 32, 3, 3]) == "dense conv"
    assert group("aten::convolution_backward", [[2, 8, 5, 5], [2, 8, 5, 5], [8, 1, 3, 3]]) == "depthwise conv bwd"
    assert group("aten::mkldnn_convolution", [[2, 8, 5, 5], [16, 8, 1, 1]]) == "pointwise (1x1) conv fwd"


@pytest.mark.slow
def test_dreg_overhead_quick(tmp_path: Path) -> None:
    record = _quick("dreg_overhead", tmp_path)
    assert {"flop_counter", "rows", "r1_excess", "target_met"} <= set(record)
    assert {r["model"] for r in record["rows"]} == {"vgg16", "resnet18", "mobilenetv2"}
    assert {"time_ratio", "flop_ratio", "excess", "time_ratio_min", "time_ratio_max"} <= set(record["rows"][0])


@pytest.mark.slow
def test_framework_quick(tmp_path: Path) -> None:
    record = _quick("framework", tmp_path)
    assert {"rows", "times", "target_met"} <= set(record)
    assert len(record["times"]["suite"]) == len(record["times"]["hand"]) == record["reps"]


@pytest.mark.slow
def test_data_quick(tmp_path: Path) -> None:
    record = _quick("data", tmp_path)
    assert {"images_per_s", "speedup", "data_fraction", "targets_met"} <= set(record)
    assert set(record["images_per_s"]) == {"device", "reference"}


@pytest.mark.slow
def test_memory_quick(tmp_path: Path) -> None:
    record = _quick("memory", tmp_path)
    assert {"rows", "growth", "target_met"} <= set(record)
    assert [r["micro_batches"] for r in record["rows"]] == [4, 60]
    assert all(r["peak_rss_mb"] > 0 for r in record["rows"])


def test_paper_grid_the_gpu_projection_is_made_of() -> None:
    """The 81 distinct runs of Figs. 2-8 at paper scale and their FLOPs, from the counts of docs/method.md §6."""
    grid = paper_grid()
    assert len(grid) == len({g["run"] for g in grid}) == 81
    assert sum(g["flops"] for g in grid) == pytest.approx(2.61e18, rel=0.01)
