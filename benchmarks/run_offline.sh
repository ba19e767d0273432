#!/usr/bin/env bash
# Install carried wheels into a folder and run the GPU benchmark, without internet.
#
#   bash benchmarks/run_offline.sh WHEEL_DIR TARGET_DIR [gpu.py arguments...]
#
# WHEEL_DIR holds the wheels the machine lacks (benchmarks/README.md says which);
# they are installed as they are, without their dependencies, into TARGET_DIR,
# which goes first on PYTHONPATH, the repository after it (keras_barlow from the
# source tree unless its wheel is among the carried ones). Then
# benchmarks/gpu.py runs on Keras' JAX backend; its JSON lines go to stdout and
# to RESULTS_DIR/gpu.jsonl (default: TARGET_DIR), each written as it is
# produced, its log to RESULTS_DIR/gpu.err. The exit status is gpu.py's.
set -uo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 WHEEL_DIR TARGET_DIR [gpu.py arguments...]" >&2
    exit 2
fi
wheel_dir=$1
target_dir=$2
shift 2
repository=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
results_dir=${RESULTS_DIR:-$target_dir}

shopt -s nullglob
wheels=("$wheel_dir"/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in $wheel_dir" >&2
    exit 2
fi
mkdir -p "$target_dir" "$results_dir"
"$python" -m pip install --quiet --no-index --find-links "$wheel_dir" --no-deps \
    --no-compile --upgrade --target "$target_dir" "${wheels[@]}" || exit 3

export PYTHONPATH="$target_dir:$repository${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
export PYTHONUNBUFFERED=1
# A missing dependency shows here, in seconds, not in the middle of the run.
"$python" -c "import keras, keras_barlow; print('keras', keras.__version__, \
'on', keras.backend.backend(), '| keras_barlow from', keras_barlow.__file__)" || exit 4
if compgen -G "$wheel_dir/grain-*.whl" >/dev/null; then
    "$python" -c "import grain" || exit 4
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L

"$python" "$repository/benchmarks/gpu.py" --out "$results_dir/gpu.jsonl" "$@" \
    2> >(tee -a "$results_dir/gpu.err" >&2)
