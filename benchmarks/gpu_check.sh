#!/usr/bin/env bash
# One pass of every check that needs a CUDA GPU: kernel correctness under real CUDA, then the
# kernel, scoring and training benchmarks and the mixed-precision check. Sized for a short lease
# (about 8-10 minutes on an H100/H200, at most ~14); each step has its own time limit so one slow step cannot
# take the others with it. Writes everything to ${OUT:-.}/gpu_check.log.
#
#   bash benchmarks/gpu_check.sh [DATA_ROOT]    # DATA_ROOT holds fashion_mnist.npz (precision check)
#
# ../shared/data does not travel to a lent machine: copy fashion_mnist.npz into a folder that
# .git/info/exclude ignores (e.g. .device_data/), carry that folder, pass it as DATA_ROOT, and
# delete it afterwards (data never goes into the repository).
set -u
LOG="${OUT:-.}/gpu_check.log"
DATA_ROOT="${1:-../shared/data}"
export PYTHONUNBUFFERED=1
unset TRITON_INTERPRET

step() {  # step SECONDS TITLE COMMAND...
    local limit=$1 title=$2
    shift 2
    echo -e "\n===== $title ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "===== $title: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    python3 -c "import torch, triton, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG"
# In order of what matters most, so a cut-off run still returns the key numbers.
step 60 install python3 -m pip install -q --no-deps --no-build-isolation -e .
step 120 tests python3 -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_scoring_engine.py \
    tests/test_model.py tests/test_likelihoods.py tests/test_estimator.py
step 120 kernels python3 benchmarks/speed/kernels.py
step 60 scoring-cifar python3 benchmarks/speed/scoring_speed.py --archs paper-cifar --samples 1 16 --batch 64 --repeats 3
step 90 training python3 benchmarks/speed/training_speed.py --archs paper-mnist paper-cifar --batch 128 --steps 10 --repeats 3 --no_compiled
step 75 precision python3 benchmarks/speed/precision_check.py --data_root "$DATA_ROOT" --epochs 3
step 40 scoring-memory python3 benchmarks/speed/scoring_speed.py --memory
step 60 scoring-mnist python3 benchmarks/speed/scoring_speed.py --archs paper-mnist --samples 1 16 256 --batch 128 --repeats 3
step 45 scoring-mnist-1000 python3 benchmarks/speed/scoring_speed.py --archs paper-mnist --samples 1000 --batch 16 --repeats 3
step 45 scoring-cifar-256 python3 benchmarks/speed/scoring_speed.py --archs paper-cifar --samples 256 --batch 8 --repeats 3
# Last, as it compiles (a minute or more per compiled variant, cold): torch.compile's training steps on CUDA.
step 150 training-compiled python3 benchmarks/speed/training_speed.py --archs paper-cifar --batch 128 --steps 10 --repeats 3
date -u | tee -a "$LOG"
