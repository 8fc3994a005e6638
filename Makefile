# nnraw: the two commands a newcomer runs are `make demo` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch==2.13.0 takes the CPU wheel that lies on these machines; any other spec pulls GB of CUDA wheels.
TORCH_SPEC ?= torch==2.13.0
BUILD_DEPS := pybind11 scikit-build-core ninja "cmake>=3.28"
APT_PACKAGES := libimage-exiftool-perl darktable xvfb xauth debootstrap
SAMPLE := samples/canon550d_colorchart_crop.dng

.PHONY: demo test test-fast install wheel system-deps dev bench clean cuda-check cuda-build-check gpu-wheels train-joint export-joint train-xtrans export-xtrans train-xtrans-data train-xtrans-cast train-joint-cast train-joint-low export-joint-via

$(VENV)/.deps-stamp: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)" $(BUILD_DEPS)
	touch $@

# Build and install nnraw (with its compiled ops) into the virtual environment.
install: $(VENV)/.deps-stamp
	@# a `make dev` build beside the sources would be copied into the wheel as well: remove it
	rm -f python/nnraw/_C*.so python/nnraw/_build_info.json
	$(PIP) install -q --no-build-isolation ".[test]"
	$(PY) -m nnraw.ops --check

# The wheel a photographer installs (README "For photographers"): dist/nnraw-<version>-<tags>.whl with
# the compiled ops (CUDA kernels too where this machine builds them, see NNRAW_CUDA), the weights and the
# adapters; it requires exactly the torch it was compiled against. Shares build/<wheel tag>/ with
# `make install`, so after it only the packing is new.
DIST ?= dist
wheel: $(VENV)/.deps-stamp
	rm -f python/nnraw/_C*.so python/nnraw/_build_info.json
	$(PIP) wheel -q --no-build-isolation --no-deps -w $(DIST) .
	@ls -1 $(DIST)/nnraw-*.whl

# Debian packages the tests use: exiftool, darktable (4.2 on Debian 12), Xvfb, debootstrap (for the
# Debian 13 chroot with GIMP 3 and darktable 5). Installed only where missing.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	echo "Debian packages for the tests: $(APT_PACKAGES) ($${missing:+installing: }$$(echo $${missing:-all installed}))"; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The main job on the bundled sample raw.
demo: install
	mkdir -p out
	$(VENV)/bin/nnraw convert "$(SAMPLE)" -o out/sample-nnraw.dng --preview out/sample-nnraw.png --overwrite
	@echo "wrote out/sample-nnraw.dng (open it in darktable, Lightroom or RawTherapee) and out/sample-nnraw.png"

# Everything: unit tests and the slow tier (real darktable/GIMP runs, training).
test: install system-deps
	$(PY) -m pytest -ra

test-fast: install
	$(PY) -m pytest -ra -m "not slow"

# Development build: compiles the extension into python/nnraw/ for use with PYTHONPATH=python.
NNRAW_CUDA ?= AUTO
dev:
	cmake -S . -B build/dev -G Ninja -DPython_EXECUTABLE=$$(command -v $(PYTHON)) -DCMAKE_BUILD_TYPE=Release \
	  -DNNRAW_CUDA=$(NNRAW_CUDA)
	cmake --build build/dev

# $(call train-in-background,CONFIG,RUN_DIR): `nnraw train CONFIG` on TRAIN_DATA in the background (nice, both
# cores, OpenMP threads that sleep when idle), resuming from RUN_DIR/checkpoint.pt; log in RUN_DIR/train.log.
define train-in-background
	mkdir -p $(2)
	OMP_WAIT_POLICY=PASSIVE setsid nohup nice -n 10 $(VENV)/bin/nnraw train $(1) --data $(TRAIN_DATA) \
	  --run-dir $(2) --threads 2 >> $(2)/train.log 2>&1 < /dev/null &
	@echo "training in the background: tail -f $(2)/train.log"
endef

# Resume the fine-tuning of the default network (configs/joint.toml) in the background, from the
# checkpoint committed in runs/joint/ (weights, Adam state, schedule, RNG states): every session
# continues where the last stopped. Builds the training data first where it is missing (~1 min).
# Log: runs/joint/train.log; progress: `python bench/run_progress.py runs/joint --markdown`.
TRAIN_DATA ?= /work/cache/ds10
SHARED_TRAIN ?= ../shared/data/train
train-joint: install
	test -f $(TRAIN_DATA)/dataset.json || $(VENV)/bin/nnraw dataset build $(SHARED_TRAIN)/bsds432 $(SHARED_TRAIN)/urban50 \
	  $(SHARED_TRAIN)/sunhays80 $(SHARED_TRAIN)/wikipedia $(SHARED_TRAIN)/skimage -o $(TRAIN_DATA) --val-fraction 0 --crop 160 \
	  --hold-out $(SHARED_TRAIN)/wikipedia --hold-out $(SHARED_TRAIN)/skimage
	$(call train-in-background,configs/joint.toml,runs/joint)

# The Bayer colour cast and strength response (configs/joint-cast.toml): runs/joint continued from step 31000
# without jittered noise maps and with the cast priced in relative linear units, in the background, resumable
# from runs/joint-cast/checkpoint.pt. Log: runs/joint-cast/train.log.
train-joint-cast: train-xtrans-data
	$(call train-in-background,configs/joint-cast.toml,runs/joint-cast)

# The low-noise expert (configs/joint-low.toml): demosaicnet's weights fine-tuned on ISO ~50-2000 only, in the
# background, resumable from runs/joint-low/checkpoint.pt. Log: runs/joint-low/train.log.
train-joint-low: train-xtrans-data
	$(call train-in-background,configs/joint-low.toml,runs/joint-low)

# Ship the fine-tuning's latest checkpoint (runs/joint/checkpoint.pt, validation from runs/joint/val.csv)
# as the default network: python/nnraw/weights/default.{safetensors,json} (float16), blended by the noise
# level with demosaicnet's published weights (nnraw.models.noise_blend; anchors NOISE:ALPHA, noise std at
# linear grey 0.18: ISO 100, 400, 1600, 3200, 6400 of the bench), then reinstalls.
# Trains nothing; commit the two files.
DEFAULT_BLEND ?= 0.00346:0.1 0.00588:0.2 0.0113:0.75 0.0158:0.9 0.0212:1.0
# X-Trans: more of the fine-tuned weights at ISO 100 and 400 (bench/blend_sweep.py --model xtrans, 2026-12-07:
# alpha 0.5 led alpha 0.1-0.2 there by ~0.2 dB on the selection crops; 1600 up as the Bayer default)
XTRANS_BLEND ?= 0.00346:0.45 0.00588:0.5 0.0113:0.75 0.0158:0.9 0.0212:1.0
JOINT_RUN ?= runs/joint
JOINT_CONFIG ?= configs/joint.toml
export-joint: install
	$(VENV)/bin/nnraw train $(JOINT_CONFIG) --run-dir $(JOINT_RUN) --export-only --export-name default \
	  --weights-dir python/nnraw/weights
	$(PY) -m nnraw.training.blend default $(DEFAULT_BLEND) -w python/nnraw/weights
	$(MAKE) install    # the venv holds a copy of the package: put the new weights there too

# Route the default's noise blend through the low-noise expert (configs/joint-low.toml, runs/joint-low): exports
# its checkpoint to build/joint-low/ and re-blends python/nnraw/weights/default.* along the path demosaicnet's
# weights (alpha 0) -> the expert (0.5) -> the previous blend's ISO 1600 mix, start + 0.75 x (fine-tuned - start)
# (0.75) -> the fine-tuned weights (1) (nnraw.models.noise_blend, via points), keeping the default's fine-tuned
# weights; reinstalls. Run it after export-joint, which writes a default without via points. Commit the two files.
# Anchors and via points: bench/blend_sweep.py and bench/quality.py, 2026-12-07 (docs/BENCHMARKS.md).
JOINT_LOW_RUN ?= runs/joint-low
DEFAULT_VIA_BLEND ?= 0.00346:0.25 0.00588:0.25 0.0113:0.75 0.0158:1.0 0.0212:1.0
DEFAULT_VIA ?= 0.5:build/joint-low/joint-low.safetensors 0.75:mix=0.75
export-joint-via: install
	$(VENV)/bin/nnraw train configs/joint-low.toml --run-dir $(JOINT_LOW_RUN) --export-only --export-name joint-low \
	  --weights-dir build/joint-low
	$(PY) -m nnraw.training.blend default $(DEFAULT_VIA_BLEND) $(foreach v,$(DEFAULT_VIA),--via $(v)) \
	  -w python/nnraw/weights
	$(MAKE) install

# The X-Trans network (issue #18, configs/xtrans.toml): demosaicnet's X-Trans weights fine-tuned
# noise-aware, in the background and resumable from runs/xtrans/checkpoint.pt, on the same data as
# train-joint. Log: runs/xtrans/train.log; progress: `python bench/run_progress.py runs/xtrans --markdown`.
train-xtrans-data: install
	test -f $(TRAIN_DATA)/dataset.json || $(VENV)/bin/nnraw dataset build $(SHARED_TRAIN)/bsds432 $(SHARED_TRAIN)/urban50 \
	  $(SHARED_TRAIN)/sunhays80 $(SHARED_TRAIN)/wikipedia $(SHARED_TRAIN)/skimage -o $(TRAIN_DATA) --val-fraction 0 --crop 160 \
	  --hold-out $(SHARED_TRAIN)/wikipedia --hold-out $(SHARED_TRAIN)/skimage

train-xtrans: train-xtrans-data
	$(call train-in-background,configs/xtrans.toml,runs/xtrans)

# The X-Trans colour cast (configs/xtrans-cast.toml): runs/xtrans continued from step 13300 with the cast
# priced in relative linear units, in the background, resumable from runs/xtrans-cast/checkpoint.pt.
train-xtrans-cast: train-xtrans-data
	$(call train-in-background,configs/xtrans-cast.toml,runs/xtrans-cast)

# Ship the X-Trans run's latest checkpoint as python/nnraw/weights/xtrans.{safetensors,json} (float16),
# which `nnraw convert --model default` then runs on X-Trans raws; reinstalls. Commit the two files.
XTRANS_RUN ?= runs/xtrans-cast
XTRANS_CONFIG ?= configs/xtrans-cast.toml
export-xtrans: install
	$(VENV)/bin/nnraw train $(XTRANS_CONFIG) --run-dir $(XTRANS_RUN) --export-only --export-name xtrans \
	  --weights-dir python/nnraw/weights
	$(PY) -m nnraw.training.blend xtrans $(XTRANS_BLEND) -w python/nnraw/weights
	$(MAKE) install

bench: install
	$(PY) bench/ops.py

clean:
	rm -rf build out dist python/nnraw/_C*.so python/nnraw/_build_info.json

# Compile-only check of the CUDA kernels against the installed torch's headers (for machines with nvcc
# but no CUDA torch/GPU): nvcc -c for sm_90 into build/cuda-check/. Not linked, not run.
CUDA_ARCH ?= sm_90
cuda-check:
	@T=$$($(PY) -c "import torch, os; print(os.path.dirname(torch.__file__) + '/include')"); \
	mkdir -p build/cuda-check/shim/c10/cuda/impl; \
	test -f $$T/c10/cuda/impl/cuda_cmake_macros.h || printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > build/cuda-check/shim/c10/cuda/impl/cuda_cmake_macros.h; \
	for f in csrc/cuda/*.cu; do \
	  echo "nvcc -c $$f (-arch=$(CUDA_ARCH))"; \
	  nvcc -std=c++20 -c $$f -o build/cuda-check/$$(basename $$f).o -Ibuild/cuda-check/shim -I$$T -I$$T/torch/csrc/api/include -Icsrc \
	    -arch=$(CUDA_ARCH) -D_GLIBCXX_USE_CXX11_ABI=1 -DNNRAW_WITH_CUDA=1 --expt-relaxed-constexpr --use_fast_math -Xcompiler -fPIC || exit 1; \
	done; echo "all CUDA sources compile for $(CUDA_ARCH) (compile-only check)"

# The full CUDA build on a machine without a GPU: a second venv (outside the repository) with the CUDA
# torch the GPU machine runs (2.11.0+cu130 from PyPI, ~4 GB with its nvidia-* wheels), nnraw built
# there with NNRAW_CUDA=ON for sm_90 and linked against libtorch_cuda, its kernel table printed
# (CPU, CUDA per op), and the CPU tests run with that build. Nothing runs on a GPU.
CUDA_VENV ?= $(HOME)/.cache/nnraw/venv-cu130
CUDA_TORCH ?= torch==2.11.0
cuda-build-check:
	test -x $(CUDA_VENV)/bin/python || $(PYTHON) -m venv $(CUDA_VENV)
	@# --isolated: this machine's pip config caps torch and prefers its local CPU wheel; the CUDA torch
	@# installed first then satisfies the package's `torch>=2.4`
	$(CUDA_VENV)/bin/pip --isolated install -q --index-url https://pypi.org/simple "$(CUDA_TORCH)" $(BUILD_DEPS)
	rm -rf build/cuda-build
	NNRAW_CUDA=ON TORCH_CUDA_ARCH_LIST=9.0 $(CUDA_VENV)/bin/pip install -q --no-build-isolation \
	  --config-settings=build-dir=build/cuda-build ".[test]"
	$(CUDA_VENV)/bin/python -m nnraw.ops
	$(CUDA_VENV)/bin/python -m pytest -q -m "not slow" -p no:cacheprovider --rootdir . tests

# For bench/gpu_check.sh on the GPU machine (no network there; Python 3.12, torch preinstalled): the
# wheels it lacks, downloaded here into .whl/ (git-ignored; carry it with the device tool).
GPU_PYTHON ?= 3.12
GPU_WHEELS ?= rawpy==0.28.0 pyexiv2==2.16.0 pytorch_msssim==1.0.0 demosaicnet==0.0.14 setuptools==80.10.2
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip --isolated download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --index-url https://pypi.org/simple \
	  -d .whl $(GPU_WHEELS)
	@# demosaicnet imports wget, which PyPI has only as a source archive: build its (pure-Python) wheel
	$(PYTHON) -m pip --isolated wheel -q --no-deps --index-url https://pypi.org/simple -w .whl wget==3.2
	ls -l .whl
