#!/usr/bin/env bash
# stop-slurm.sh - stop what .ci/slurm/start-slurm.sh started, each daemon by the PID in
# its own pid file (TERM, then KILL after 30 s). Cancels queued/running jobs
# first unless SLURM_STOP_CANCEL=0. Config, state and packages are kept, so a
# later start-slurm.sh is fast.
set -u
alive() { [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop() { # stop NAME PIDFILE
  local name=$1 f=$2 pid i
  [ -s "$f" ] || { echo "[stop-slurm] $name: no pid file"; return 0; }
  pid=$(cat "$f")
  alive "$pid" || { echo "[stop-slurm] $name: not running"; return 0; }
  kill -TERM "$pid"
  for i in $(seq 1 120); do alive "$pid" || break; sleep 0.25; done
  if alive "$pid"; then echo "[stop-slurm] $name ($pid) ignored TERM, killing"; kill -KILL "$pid"; fi
  echo "[stop-slurm] $name ($pid) stopped"
}
if [ "${SLURM_STOP_CANCEL:-1}" = 1 ] && command -v scontrol >/dev/null && scontrol ping >/dev/null 2>&1; then
  ids=$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')
  [ -n "${ids// }" ] && { echo "[stop-slurm] cancelling jobs: $ids"; scancel $ids; sleep 1; }
fi
for f in /run/slurmd.pid /run/slurmd-*.pid; do stop "slurmd (${f#/run/})" "$f"; done
stop slurmctld /run/slurmctld.pid
stop slurmdbd  /run/slurmdbd.pid
stop mariadb   /run/mysqld/mysqld.pid
stop munged    /run/munge/munged.pid
exit 0
