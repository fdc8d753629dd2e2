#!/usr/bin/env bash
# The GPU check: the CUDA tests, the GPU benchmark, and 5 epochs of the mini 30k pair on the GPU.
# Uses the Python it finds (PYTHON, else python3) with torch, torchvision and Lightning installed; needs no
# network and no wandb. Output goes to $OUT (default results/gpu-check): logs and the benchmark's JSON.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-results/gpu-check}
PACKED=${PACKED:-.carry/mini-cifar10.npz}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled
status=0
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt" || exit 1
timeout 120 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py 2>&1 | tee "$OUT/cuda-tests.log" || status=1
timeout 300 "$PY" -m benchmarks gpu --device cuda --bf16 --channels-last --out "$OUT" 2>&1 | tee "$OUT/gpu-benchmark.log" || status=1
if [ -f "$PACKED" ]; then
	"$PY" -m experiments.carry unpack "$PACKED" /tmp/dreg-cifar10 > /dev/null
	timeout 120 "$PY" -m experiments run fig2 --preset mini --only 'bs30720-' epochs=5 --accelerator gpu \
		--data-dir /tmp/dreg-cifar10 --no-verify --no-progress --results "$OUT/runs" 2>&1 | tail -5 | tee "$OUT/mini-pair.log" || status=1
	cp "$OUT"/runs/mini/*/metrics.csv "$OUT"/ 2>/dev/null
else
	echo "no $PACKED: skipped the mini pair (pack it where the data is: python -m experiments.carry pack ...)" | tee "$OUT/mini-pair.log"
fi
exit $status
