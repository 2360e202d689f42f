#!/usr/bin/env bash
# The one prepared run for a lent GPU machine (the tool library's "device"): correctness first, then
# the attention layer alone (eager / sdpa / triton), then the side-by-side GPU benchmark. Everything
# lands in $OUT (default benchmarks/results): the pytest log and JUnit XML of tests/gpu,
# cuda-attention.json/.md, and cuda-<variant>.json/.md, written after every benchmark case.
#
#   run: bash benchmarks/device.sh            (timeout_s 600; the benchmark stops starting cases at 330 s)
set -u -o pipefail
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PYTHON=${PYTHON:-python3}
started=$SECONDS

"$PYTHON" - <<'PY' 2>&1 | tee "$OUT/device-info.txt" || exit 1
import importlib, sys
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
missing = []
for name in ("transformers", "timm", "triton", "PIL", "safetensors", "numpy", "swinv2"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "(no version)"))
    except ImportError as error:
        missing.append(f"{name}: {error}")
if missing:
    sys.exit("cannot run: " + "; ".join(missing))
PY

# SIGINT, not SIGTERM: pytest stops, then still writes its summary and the JUnit XML
timeout -s INT 240 "$PYTHON" -m pytest -q -rA --durations=15 -m gpu tests/gpu -p no:cacheprovider \
    --junitxml="$OUT/gpu-tests.xml" 2>&1 | tee "$OUT/gpu-tests.txt" | tail -40
echo "tests took $((SECONDS - started)) s"

timeout 90 "$PYTHON" benchmarks/attention.py --device cuda --out "$OUT" 2>&1 | tee "$OUT/attention.txt"
echo "attention layer took until $((SECONDS - started)) s"

timeout $((560 - (SECONDS - started))) "$PYTHON" benchmarks/run.py --device cuda --rounds 5 --out "$OUT" \
    --budget-s $((330 - (SECONDS - started))) 2>&1 | grep -v "^USDT\|^ERROR:.*DeviceProperties" | tee "$OUT/bench.txt"
echo "all took $((SECONDS - started)) s"
