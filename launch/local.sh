#!/usr/bin/env bash
# Train on all GPUs (or all CPU cores' worth of one device) of this machine.
# One process drives every local device: the batch is sharded over a `data`
# mesh axis and codebook statistics are taken over the global batch.
#
#   launch/local.sh configs/paper_single.py runs/single_d8 [--config.key=value ...]
#
# Pin the GPUs with CUDA_VISIBLE_DEVICES=0,1,2,3 launch/local.sh ...
set -euo pipefail
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
# Let XLA use most of the GPU memory up front (JAX's default is 75%).
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
exec "$python" -m vqjax.main --config="$config" --workdir="$workdir" "$@"
