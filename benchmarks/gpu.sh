#!/usr/bin/env bash
# The GPU check: CUDA tests of the encoders, then the encoder throughput benchmarks.
# Usage on a CUDA machine, from the repository root: bash benchmarks/gpu.sh [RESULTS_DIR]
# Needs python3 with torch (CUDA), numpy, pandas, pytest; eocausal is used from the source tree.
set -uo pipefail
RES=${1:-benchmarks/results}
mkdir -p "$RES"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/gpu_info.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/encoders/test_random_features.py tests/encoders/test_pretrained.py \
  tests/encoders/test_propensity_cnn.py tests/encoders/test_salience.py 2>&1 | tee "$RES/gpu_tests.log"
python3 -m benchmarks.random_features --device cuda --n 64 --reps 5 --out "$RES/random_features.md"
python3 -m benchmarks.gpu_encoders --out "$RES/gpu_encoders.md"
