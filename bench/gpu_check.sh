#!/usr/bin/env bash
# The GPU check (issue 32) in one command: search_bench's figures 1-3 and 2b
# with the hf engine on one GPU, on openr-arith and on a larger PRM, into
# bench/results/gpu_check.json (bench/gpu_check.py says what it measures).
#
#   bench/gpu_check.sh --download DIR      # where pip reaches a package index: fetch the
#                                          # wheels a GPU machine without one may lack into DIR
#   bench/gpu_check.sh [--wheels DIR] [ARGS...]
#                                          # on the GPU machine: install from DIR what its Python
#                                          # lacks, then python -m bench.gpu_check ARGS
#                                          # (--device cpu: the same check on a CPU; --out FILE)
#
# The GPU image this was written for holds PyTorch (CUDA), transformers, sympy,
# httpx and the rest of what search_bench imports, except math-verify (the
# grader) and its two needs: WHEELS. All three are pure Python, one wheel each
# whatever the platform; pip is still told the GPU machine's Python (3.12,
# manylinux x86-64) so that a wheel for another one is never fetched.
# PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
WHEELS=(math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2)
TARGET_PYTHON=3.12
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
SITE=${TMPDIR:-/tmp}/openr-gpu-check-site  # where the wheels are installed, first on PYTHONPATH

if [[ ${1:-} == --download ]]; then
    [[ $# -eq 2 ]] || { echo "usage: $0 --download DIR" >&2; exit 2; }
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" \
        --implementation cp "${PLATFORMS[@]/#/--platform=}" --dest "$2" "${WHEELS[@]}"
    exit
fi

wheels=""
if [[ ${1:-} == --wheels ]]; then
    [[ $# -ge 2 ]] || { echo "usage: $0 --wheels DIR [ARGS...]" >&2; exit 2; }
    wheels=$2
    shift 2
fi

if ! "$PYTHON" -c "import math_verify" 2>/dev/null; then
    if [[ -z $wheels ]]; then
        echo "$PYTHON has no math_verify: fetch the wheels with '$0 --download DIR' where pip reaches" \
             "a package index, and pass --wheels DIR" >&2
        exit 1
    fi
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$wheels"/*.whl
    export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
fi

export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1  # every checkpoint is local; show progress as it comes
exec "$PYTHON" -m bench.gpu_check "$@"
