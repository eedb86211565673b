#!/usr/bin/env bash
# The GPU check: trainer throughput per backbone of the `paper` space (bf16 + channels_last, and fp32 at one
# resolution), then several trainer processes packed on the one GPU against one alone with nvidia-smi
# sampled every second, then the verdict with `--budget 200` extrapolated. About 5 minutes on one H100.
# Needs torch, timm, monai, nibabel, scikit-learn and the repository; Ray, Optuna and MLflow are not used.
#
#   bash bench/gpu_check.sh [RESULTS_DIR]        # default: bench/results/<machine>
#
# Knobs (environment): GPU_CHECK_DEVICE (cuda), GPU_CHECK_RESOLUTIONS (128,192,256), GPU_CHECK_FP32_AT (192),
# GPU_CHECK_BACKBONES (the paper space's), GPU_CHECK_PACK ("resnet50 192 8": backbone, px, epochs),
# GPU_CHECK_PROCS (4), GPU_CHECK_MANIFEST (default: the phantom cohort), NVIDIA_SMI (nvidia-smi).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
RES="${GPU_CHECK_RESOLUTIONS:-128,192,256}"
FP32_AT="${GPU_CHECK_FP32_AT:-192}"
read -r PACK_BACKBONE PACK_PX PACK_EPOCHS <<<"${GPU_CHECK_PACK:-resnet50 192 8}"
PROCS="${GPU_CHECK_PROCS:-4}"
OUT_DIR="${1:-bench/results/$("$PY" -c 'from bench._common import machine_id; print(machine_id())')}"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

echo "== machine"
${NVIDIA_SMI:-nvidia-smi} -L || echo "(no nvidia-smi)"
"$PY" -c 'import torch, timm; print("torch", torch.__version__, "timm", timm.__version__, "cuda", torch.cuda.is_available())'

manifest_flag=()
if [ -n "${GPU_CHECK_MANIFEST:-}" ]; then
    manifest_flag=(--manifest "$GPU_CHECK_MANIFEST")
fi
echo "== cohort (generated and preprocessed once, before any trainer starts)"
"$PY" - "${GPU_CHECK_MANIFEST:-}" <<'PYEOF'
import sys, time
from trainers.cv import prepare_cohort, resolve_manifest
t = time.perf_counter()
manifest = resolve_manifest(sys.argv[1] or None)
prepare_cohort(manifest)
print(f"cohort ready in {time.perf_counter() - t:.1f} s: {manifest}")
PYEOF

echo "== throughput"
backbones=()
if [ -n "${GPU_CHECK_BACKBONES:-}" ]; then
    backbones=(--backbones "$GPU_CHECK_BACKBONES")
fi
"$PY" -m bench.throughput --space paper "${backbones[@]}" --resolutions "$RES" --fp32-resolutions "$FP32_AT" \
    --device "$DEVICE" --epochs 1 --out "$OUT_DIR"

echo "== packing: 1 trainer alone, then $PROCS at once"
"$PY" -m bench.pack --backbone "$PACK_BACKBONE" --resolution "$PACK_PX" --epochs "$PACK_EPOCHS" \
    --procs "$PROCS" --device "$DEVICE" "${manifest_flag[@]}" --out "$OUT_DIR"

echo "== verdict"
"$PY" -m bench.gpu_report --results "$OUT_DIR"
