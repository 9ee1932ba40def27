#!/usr/bin/env bash
# The CUDA checks and benchmarks, as run on a lent GPU machine (no network there): the
# gpu-marked tests and the cuda variants of the device tests, then the exact-OT, path-sampling,
# manifold-solver, SO(3)/SE(3) and GP-noise speed tables on CUDA. Third-party packages the
# machine lacks travel as wheels in .whl/ (see benchmarks/README.md). Results go to $OUT
# (default benchmarks/results). PARTS picks the steps and their order (default: all of them);
# the timeouts bound each step, about 12 minutes in all on an H200.
#
#   OUT=benchmarks/results bash benchmarks/run_cuda.sh
#   PARTS="tests ot so3 gp" OUT=benchmarks/results bash benchmarks/run_cuda.sh
#   PARTS="otprofile ot manifolds tests" ...   (exact OT at 4096 points first, then the solver step)
set -u
OUT=${OUT:-benchmarks/results}
PARTS=${PARTS:-tests ot otprofile paths manifolds so3 gp}
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

part_tests() {
  # the project's addopts are quiet (-q); reset them so that each run ends with its summary
  { timeout 90 $PY -m pytest -o addopts= -q -p no:cacheprovider -rfE -m gpu tests 2>&1
    timeout 120 $PY -m pytest -o addopts= -q -p no:cacheprovider -rfE -k cuda tests 2>&1
  } > "$OUT/cuda_tests.log"
  grep -E "passed|failed|FAILED|ERROR" "$OUT/cuda_tests.log"
}
part_ot() {
  timeout 150 $PY benchmarks/bench_ot.py --device cuda --rounds 5 --draws 5 \
    --out "$OUT/ot_cuda.json" 2>&1 | tail -25
}
part_otprofile() {
  # the rounds of the sparse certified solve against the dense route, three batches a size
  timeout 120 $PY benchmarks/profile_ot.py --device cuda --sizes 1024x2,4096x2,4096x3072 \
    --reps 2 --seeds 0 1 2 2>&1 | tee "$OUT/ot_cuda_profile.txt" | tail -40
}
part_paths() {
  timeout 100 $PY benchmarks/bench_paths.py --device cuda --out "$OUT/paths_cuda.json" 2>&1 | tail -25
}
part_manifolds() {
  timeout 120 $PY benchmarks/bench_manifolds.py --part speed --device cuda \
    --out-speed "$OUT/manifolds_speed_cuda.json" 2>&1 | tail -40
}
part_so3() {
  timeout 90 $PY benchmarks/bench_so3.py --part speed accuracy igso3 se3paths --device cuda \
    --rounds 7 --out "$OUT/so3_cuda.json" 2>&1 | tail -40
}
part_gp() {
  timeout 150 $PY benchmarks/bench_gp.py --device cuda --cases "1-D n=1000" "1-D n=4000" 64x64 \
    128x128 --methods fft cholesky gpytorch --out "$OUT/gp_cuda.json" 2>&1 | tail -20
}
for part in $PARTS; do
  case $part in
    tests | ot | otprofile | paths | manifolds | so3 | gp) echo "== $part"; "part_$part" ;;
    *) echo "unknown part: $part (tests ot otprofile paths manifolds so3 gp)" >&2; exit 2 ;;
  esac
done
echo "run_cuda.sh done"
