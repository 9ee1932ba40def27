#!/usr/bin/env bash
# The CUDA checks and benchmarks, as run on a lent GPU machine (no network there): the
# gpu-marked tests and the cuda variants of the device tests, then the path-sampling, exact-OT
# and manifold-solver speed tables on CUDA. Third-party packages the machine lacks travel as
# wheels in .whl/ (see benchmarks/README.md). Results go to $OUT (default benchmarks/results).
# About 12 minutes in all on an H200; the timeouts bound each step.
#
#   OUT=benchmarks/results bash benchmarks/run_cuda.sh
set -u
OUT=${OUT:-benchmarks/results}
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
PY=${PY:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, ot, geoopt, roma; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$OUT/cuda_env.txt"
timeout 90 $PY -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -15 | tee "$OUT/cuda_tests.log"
timeout 150 $PY benchmarks/bench_ot.py --device cuda --out "$OUT/ot_cuda.json" 2>&1 | tail -25
timeout 100 $PY benchmarks/bench_paths.py --device cuda --out "$OUT/paths_cuda.json" 2>&1 | tail -25
timeout 120 $PY benchmarks/bench_manifolds.py --part speed --device cuda \
  --out-speed "$OUT/manifolds_speed_cuda.json" 2>&1 | tail -40
timeout 90 $PY benchmarks/bench_so3.py --part speed se3paths --device cuda \
  --out "$OUT/so3_cuda.json" 2>&1 | tail -25
timeout 150 $PY benchmarks/bench_gp.py --device cuda --cases "1-D n=1000" "1-D n=4000" 64x64 \
  128x128 --methods fft cholesky gpytorch --out "$OUT/gp_cuda.json" 2>&1 | tail -20
timeout 80 $PY -m pytest -q -p no:cacheprovider -x -k cuda tests 2>&1 | tail -15 | tee -a "$OUT/cuda_tests.log"
echo "run_cuda.sh done"
