#!/bin/sh
# The whole GPU session in one call (see benchmarks/README_gpu.md): install the carried wheels
# (`datasets` and what the GPU image lacks of it), then run every check into $OUT.
#   run(command="sh benchmarks/gpu_run.sh", carry=[".whl", ".gpudata"], timeout_s=600)
# Arguments go to benchmarks/gpu_check.py, e.g. `sh benchmarks/gpu_run.sh --only compare --time-limit 540`.
set -u
OUT=${OUT:-/tmp/gpu_check}
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export VDCNN_DATA_DIR=${VDCNN_DATA_DIR:-$PWD/.gpudata} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import datasets, pyarrow, fsspec; print('datasets', datasets.__version__, 'pyarrow', pyarrow.__version__,
'fsspec', fsspec.__version__)" || echo "warning: datasets does not import: only the speed step can run"
# --time-limit (480 s by default) stops the check well inside the call's 600 s; `timeout` is the backstop.
exec timeout -s TERM 580 python3 benchmarks/gpu_check.py --out "$OUT" "$@"
