#!/usr/bin/env bash
# The GPU checks in one run, for a machine with an NVIDIA GPU and a CUDA torch but no network
# (the project's device machine: torch 2.11.0+cu130, Python 3.12, no rawpy/pyexiv2/...):
#
#   make gpu-wheels                      # here, once: the missing wheels into .whl/ (about 8 MB)
#   bash bench/gpu_check.sh              # there, from the repository root, with .whl carried
#
# It builds nnraw in the tree (`make dev`: python/nnraw/_C*.so) with NNRAW_CUDA=ON for sm_90, prints
# the kernel table, runs the tests of the ops, the inference and the models on the GPU (the `device`
# fixture adds "cuda"), then bench/ops.py and bench/speed.py on the GPU. Everything it prints also goes to $OUT (or ./gpu-check-out) as files.
# DEVICE=cpu runs the same steps without a GPU (a dry run of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-check-out}
DEVICE=${DEVICE:-cuda}
WHEELS=${WHEELS:-.whl}
SITE=${SITE:-/tmp/nnraw-site}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

step() { echo; echo "== $1 ($(date -u +%H:%M:%S))"; }

step "wheels from $WHEELS -> $SITE"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE"
python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available() and torch.cuda.get_device_name(0))" \
  | tee "$OUT/machine.txt"
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv 2>/dev/null | tee -a "$OUT/machine.txt" || true

CUDA_MODE=$([ "$DEVICE" = cuda ] && echo ON || echo AUTO)
step "build nnraw in the tree (make dev, NNRAW_CUDA=$CUDA_MODE, sm_90)"
rm -rf build/dev python/nnraw/_C*.so
TORCH_CUDA_ARCH_LIST=9.0 make dev PYTHON=python3 NNRAW_CUDA="$CUDA_MODE" > "$OUT/build.txt" 2>&1 \
  || { tail -30 "$OUT/build.txt"; exit 1; }
grep "nnraw:" "$OUT/build.txt"
export PYTHONPATH="$PWD/python:$SITE"
python3 -m nnraw.ops | tee "$OUT/ops-info.txt"

step "tests of the ops, inference, noise and models ($DEVICE)"
set +e
python3 -m pytest -q -ra -m "not slow" -p no:cacheprovider \
  tests/test_prelu.py tests/test_ms_ssim.py tests/test_demosaic.py tests/test_infer.py \
  tests/test_noise.py tests/test_models.py 2>&1 | tee "$OUT/tests.txt" | tail -25
tests_rc=${PIPESTATUS[0]}
set -e

step "bench/ops.py --device $DEVICE"
python3 bench/ops.py --device "$DEVICE" 2>&1 | tee "$OUT/ops-bench.md" | grep -v Warning

step "bench/speed.py --device $DEVICE (24 MP)"
python3 bench/speed.py --device "$DEVICE" --json "$OUT/speed.json" 2>&1 | grep -v Warning | tail -45

echo; echo "tests exit code: $tests_rc"
exit "$tests_rc"
