#!/usr/bin/env bash
# Issue 16's accelerator figures in one call of a lent GPU machine (at most ~9-10 minutes of its time):
# the update-time table (one update per call and in a training loop), μLO's MLP at CPU-sized
# and accelerator-sized blocks, the 20M-param LM's optimizer overhead and member-steps/s against
# population (64 .. 4096); then, if time is left, compile time with same-shaped tensors grouped.
#
#   bash benchmarks/device_figures.sh --wheels   # here, with network: the packages the device image
#                                                # lacks, as wheels in .whl/ (ignored by git, 4 MB)
#   device run: bash benchmarks/device_figures.sh   carry: [".whl"]   timeout_s: 600
#   bash benchmarks/device_figures.sh --install-only   # the set-up and the machine line alone
#
# The device image has jax (with CUDA), flax, optax, orbax and chex but not evolopt's other
# dependencies, and reaches no network: DEVICE_WHEELS travel as wheels, are installed with
# --no-deps into /tmp/site, and evolopt itself is installed there from this checkout. Each part
# runs under its own time limit, so one that hangs or fails leaves the others' figures; every
# part's output goes to $OUT/<part>.txt (the device tool brings $OUT back) and to the terminal.
# On a machine without an accelerator the figures are the CPU's (a dry run of this script).
set -u
cd "$(dirname "$0")/.."
DEVICE_WHEELS=(evosax==0.3.2 dotmap==1.3.30 hydra-core==1.3.8 omegaconf==2.3.1 tensorboardX==2.6.5
  gymnax==1.0.1 gymnasium==1.3.0 mlxtend==0.25.0)
FROM_SOURCE=(antlr4-python3-runtime==4.9.3)  # omegaconf's parser; published as source only: built here
BUILD_WHEELS=(setuptools==84.2.1 wheel==0.48.0)  # build evolopt there whatever setuptools the image has (>= 77 needed)
# evolopt's other dependencies (pyproject), as the device image has them (KINDS.md's package list)
IMAGE_HAS=(jax numpy optax flax six orbax-checkpoint tensorboard scikit-learn scipy tqdm matplotlib msgpack psutil)
NOT_NEEDED=(brax hydra-joblib-launcher hydra-optuna-sweeper)  # imported only by brax tasks and sweeps

if [ "${1:-}" = "--wheels" ]; then
  rm -rf .whl && mkdir -p .whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${DEVICE_WHEELS[@]}" "${BUILD_WHEELS[@]}" ||
    exit 1
  python3 -m pip wheel -q --no-deps -w .whl "${FROM_SOURCE[@]}" || exit 1
  ls .whl && du -sh .whl
  exit 0
fi

OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if [ -d .whl ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site # first on the path: the carried setuptools builds evolopt below
  "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
fi

part() {  # part NAME SECONDS COMMAND...: one figure under its own limit, logged to $OUT/NAME.txt
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee "$OUT/$name.txt"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | grep --line-buffered -v "^WARNING: All log messages" | tee -a "$OUT/$name.txt"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$OUT/$name.txt"
}

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1
  "$PY" -c "import jax, jaxlib, optax, flax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__,
'optax', optax.__version__, 'flax', flax.__version__); print(jax.devices())"
} 2>&1 | tee "$OUT/machine.txt"
[ "${1:-}" = "--install-only" ] && exit 0 # set-up and machine line alone (a check of the install)

# In the order the issue asks for them, so a short lease still brings the first ones back.
part arch_step_time 90 "$PY" benchmarks/arch_step_time.py --repeats 20
part real_model 180 "$PY" benchmarks/real_model.py --preset 20m --batch 32 --seq 256 --steps 10
part member_steps 110 "$PY" benchmarks/member_steps.py --arch celo2 --populations 64,256,1024,4096
part arch_step_time_loop 75 "$PY" benchmarks/arch_step_time.py --repeats 20 --loop 8
part mulo_blocks 40 "$PY" benchmarks/mulo_matmuls.py --blocks 8192,65536,1048576 --repeats 20
# Whether XLA computes celo2_base's MLP once per reader on this backend too (fused.stored is CPU-only).
part mlp_loops 40 "$PY" benchmarks/kernel_profile.py --arch celo2_base --mlp-loops --population 8 --tasks 2 --truncation 5
# Not asked by issue 16, last so that a short lease cuts only it: same-shaped tensors grouped on a GPU
# (one kernel per shape instead of per tensor; on CPU it compiled 2.6-3.8x faster but stepped slower).
part compile_time_lm 60 "$PY" benchmarks/compile_time.py --model lm --archs small_fc_lopt,celo2_base
echo "figures in $OUT"
