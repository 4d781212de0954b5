#!/usr/bin/env bash
# Snakemake runs this inside the new env (--sdm conda): install this package, editable.
set -euo pipefail
python -m pip install -q --no-deps -e "$(cd "$(dirname "$0")/.." && pwd)"
