#!/usr/bin/env bash
# The tiny DAG's GPU rules on one NVIDIA GPU with vLLM (bf16, compiled), up to the corpus.
# Prints the device, each job's wall time (from Snakemake's log) and peak GPU memory (nvidia-smi
# sampled every 200 ms while the job ran). Installs nothing: activate a venv made by
# `make install ENGINE=gpu` first.
#   benchmarks/gpu_check.sh [WORKDIR]   (default: a fresh copy of the workflow under /tmp)
# TARGETS (default results/tiny/corpus/speed.parquet: 21 jobs, 16 of them on the GPU one after
# the other, each starting its own engine) picks a shorter part, e.g. results/tiny/models/junior.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/speed-gpu-check.XXXXXX)}
TARGETS=${TARGETS:-results/tiny/corpus/speed.parquet}
for cmd in snakemake nvidia-smi python; do
  command -v "$cmd" >/dev/null || { echo "gpu_check: $cmd not found (activate the venv)" >&2; exit 1; }
done
export HF_HUB_OFFLINE=1

mkdir -p "$WORK"
cp -r "$ROOT"/{Snakefile,rules,scripts,config,profiles,envs} "$WORK"/
# Teacher and generators on vLLM; every model job (teacher included) takes the one GPU, so jobs
# run one at a time on it and each one's memory is its own.
cat > "$WORK/gpu.yaml" <<'EOF'
teacher: {backend: vllm}
generation: {backend: vllm}
backends:
  vllm: {dtype: bfloat16, enforce_eager: false}
resources:
  llm: {gpu: 1}
  gpu: {gpu: 1}
EOF

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c 'import torch, vllm; print("torch", torch.__version__, "cuda", torch.version.cuda, "| vllm", vllm.__version__)'

cd "$WORK"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 > gpu_mem.csv &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
status=0
# targets first: --resources takes every word after it
snakemake $TARGETS --cores 8 --resources gpu=1 teacher_api=2 \
  --configfile gpu.yaml > snakemake.out 2>&1 || status=$?
kill $SAMPLER 2>/dev/null || true

echo "== jobs ($WORK; Snakemake output in snakemake.out, job logs in results/tiny/logs/)"
python - .snakemake/log/"$(ls -t .snakemake/log | head -1)" gpu_mem.csv <<'EOF'
import re, sys
from datetime import datetime

log, mem = open(sys.argv[1]).read(), []
for line in open(sys.argv[2]):
    try:
        stamp, used = line.rsplit(",", 1)
        mem.append((datetime.strptime(stamp.strip(), "%Y/%m/%d %H:%M:%S.%f"), int(used)))
    except ValueError:
        pass
jobs, stamp, current = {}, None, None
for line in log.splitlines():
    if m := re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
        stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
    elif m := re.fullmatch(r"(?:local)?rule (\w+):", line):
        current = [m.group(1), stamp, None]
    elif current and (m := re.fullmatch(r"\s+wildcards: (.+)", line)):
        current[0] += f"[{m.group(1)}]"
    elif current and (m := re.fullmatch(r"\s+jobid: (\d+)", line)):
        jobs[m.group(1)] = current
    elif m := re.match(r"Finished jobid: (\d+)", line):
        jobs[m.group(1)][2] = stamp
print(f"{'job':<44} {'wall s':>7} {'peak GPU MiB':>13}")
for name, start, end in sorted(jobs.values(), key=lambda j: j[1]):
    if end is None:
        print(f"{name:<44} {'failed/unfinished':>21}")
        continue
    peak = max((u for t, u in mem if start <= t.replace(microsecond=0) <= end), default=0)
    print(f"{name:<44} {(end - start).total_seconds():>7.0f} {peak:>13}")
print(f"{'peak GPU memory over the run (MiB)':<52} {max((u for _, u in mem), default=0):>13}")
EOF
[ "$status" = 0 ] || { echo "gpu_check: snakemake failed ($status), see $WORK/snakemake.out" >&2; tail -30 snakemake.out >&2; }
exit "$status"
