#!/usr/bin/env bash
# start-slurm.sh - bring up a SLURM 22.05 cluster on localhost (Debian 12 packages),
# idempotently: install what is missing, write config, start munged [+ mariadb +
# slurmdbd] + slurmctld + one slurmd per node, wait for the nodes to be idle.
# Nodes: this host's own (partition `debug`, the default) and, for jobs that span
# nodes, SLURM_EXTRA_NODES more slurmd daemons on this same host, each a node of its
# own on its own port (partition `multinode`; `slurmd -N`, as SLURM's own test
# suite runs several nodes on one machine).
# Used by .ci/run and tests/integration/test_slurm.py (profiles/slurm). Run as root.
# Timings on a 2-core CI machine: first start (apt install) ~22 s, restart ~1 s,
# re-run while up ~0.5 s; accounting adds ~16 s (mariadb install + slurmdbd).
# Knobs (environment):
#   SLURM_ACCOUNTING=0   default: no accounting; Snakemake's slurm plugin then polls
#                        with squeue (slurm-status-command: squeue in profiles/slurm),
#                        which sees finished jobs for MinJobAge (1 h here).
#                        1: mariadb + slurmdbd so that sacct/sacctmgr work
#   SLURM_FAKE_GPU=2     advertise N fake GPUs (gres gpu:fake:N, N <= 4, character devices
#                        /dev/null, /dev/zero, ...; jobs see CUDA_VISIBLE_DEVICES=0..N-1); 0: none
#   SLURM_EXTRA_NODES=2  nodes <host>-1 .. <host>-N of partition `multinode` (each with
#                        the CPUs and memory of the host and one fake GPU); 0: none
#   SLURM_MEM_MB=N       RealMemory of each node (default: 85% of physical)
#   SLURM_CI_ACCOUNT=ci  account created in slurmdbd; root gets an association
#   SLURM_SMOKE=1        run `srun true` before declaring success
# Everything listens on 127.0.0.1 only; mariadb runs with --skip-networking.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "start-slurm.sh: run as root (it installs and starts daemons)" >&2; exit 1; }

ACCOUNTING=${SLURM_ACCOUNTING:-0}
FAKE_GPU=${SLURM_FAKE_GPU:-2}
EXTRA_NODES=${SLURM_EXTRA_NODES:-2}
CI_ACCOUNT=${SLURM_CI_ACCOUNT:-ci}
CLUSTER=ci
NODE=$(hostname -s)
ETC=/etc/slurm
LOGDIR=/var/log/slurm
DB_SOCK=/run/mysqld/mysqld.sock
T0=$(date +%s.%N)
log() { echo "[start-slurm +$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN{printf "%.1f", a-b}')s] $*"; }
alive() { # pid is running (a zombie counts as dead: PID 1 here may not reap)
  [ -n "${1:-}" ] && [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}
pid_alive() { [ -s "$1" ] && alive "$(cat "$1")"; }
pid_dead() { ! pid_alive "$1"; }
wait_for() { # wait_for SECONDS CMD... : poll CMD every 0.25 s
  local end=$(( $(date +%s) + $1 )); shift
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$end" ] && return 1
    sleep 0.25
  done
}

# ---------------------------------------------------------------- 1. install
pkgs=(munge slurm-client slurmctld slurmd slurm-wlm)
[ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[start-slurm] installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" \
    || { apt-get update -q -o DPkg::Lock::Timeout=300 && apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}"; }
fi
log "packages present"

# ---------------------------------------------------------------- 2. munge
if [ ! -s /etc/munge/munge.key ]; then           # Debian's postinst normally made one
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
if ! pid_alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged
fi
wait_for 20 bash -c 'munge -n | unmunge' || { echo "munged did not come up" >&2; exit 1; }
log "munged up"

# ---------------------------------------------------------------- 3. config
changed=0
put() { # put FILE MODE OWNER <<content ; records whether anything changed
  local f=$1 mode=$2 owner=$3 tmp; tmp=$(mktemp)
  cat > "$tmp"
  if ! cmp -s "$tmp" "$f"; then install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" "$tmp" "$f"; changed=1; fi
  rm -f "$tmp"
}
# hardware as slurmd sees it; memory below physical so the node is never INVAL
hw=$(slurmd -C | head -1)
hwval() { echo "$hw" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS=$(hwval CPUs); SOCK=$(hwval SocketsPerBoard); CORES=$(hwval CoresPerSocket); THR=$(hwval ThreadsPerCore)
MEM=${SLURM_MEM_MB:-$(( $(hwval RealMemory) * 85 / 100 ))}
install -d -o slurm -g slurm /var/lib/slurm/slurmctld "$LOGDIR"

if [ "$ACCOUNTING" = 1 ]; then
  ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
# SLURM binds a GPU to a character device; any will do for a fake one.
FAKE_DEVICES=(/dev/null /dev/zero /dev/full /dev/urandom)
[ "$FAKE_GPU" -le ${#FAKE_DEVICES[@]} ] || { echo "SLURM_FAKE_GPU=$FAKE_GPU: at most ${#FAKE_DEVICES[@]}" >&2; exit 1; }
if [ "$FAKE_GPU" -gt 0 ]; then GRES_NODE=" Gres=gpu:fake:$FAKE_GPU"; GRES_TYPES="GresTypes=gpu"; else GRES_NODE=""; GRES_TYPES="#GresTypes="; fi
EXTRA=(); for i in $(seq 1 "$EXTRA_NODES"); do EXTRA+=("$NODE-$i"); done
NODES=("$NODE" "${EXTRA[@]}")
HW="CPUs=$CPUS Sockets=$SOCK CoresPerSocket=$CORES ThreadsPerCore=$THR RealMemory=$MEM"
node_lines() { # the extra nodes: this host's slurmd binary on ports 6821.., one fake GPU each
  local i=0 n
  for n in "${EXTRA[@]}"; do
    i=$((i + 1))
    echo "NodeName=$n NodeHostname=$NODE NodeAddr=127.0.0.1 Port=$((6820 + i)) $HW${GRES_NODE:+ Gres=gpu:fake:1} State=UNKNOWN"
  done
  [ ${#EXTRA[@]} -eq 0 ] || echo "PartitionName=multinode Nodes=$(IFS=,; echo "${EXTRA[*]}") Default=NO MaxTime=INFINITE State=UP"
}

put $ETC/slurm.conf 0644 root:root <<EOF
# generated by start-slurm.sh - nodes on localhost
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd-%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
# bind daemons (and srun) to 127.0.0.1 instead of 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# finished jobs stay visible to squeue/scontrol for an hour (status polling, tests)
MinJobAge=3600
$ACCT_LINES
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 $HW$GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
$(node_lines)
EOF
if [ "$FAKE_GPU" -gt 0 ]; then
  {
    echo "# $FAKE_GPU fake GPUs, one character device each (CUDA_VISIBLE_DEVICES=0..$((FAKE_GPU - 1)))"
    echo "AutoDetect=off"
    for dev in "${FAKE_DEVICES[@]:0:$FAKE_GPU}"; do
      echo "NodeName=$NODE Name=gpu Type=fake File=$dev"
    done
    for n in "${EXTRA[@]}"; do echo "NodeName=$n Name=gpu Type=fake File=${FAKE_DEVICES[0]}"; done
  } | put $ETC/gres.conf 0644 root:root
else
  rm -f $ETC/gres.conf
fi
for n in "${NODES[@]}"; do install -d -o slurm -g slurm "/var/lib/slurm/slurmd-$n"; done
log "config written (changed=$changed): nodes ${NODES[*]} CPUs=$CPUS RealMemory=$MEM fake_gpu=$FAKE_GPU accounting=$ACCOUNTING"

# ---------------------------------------------------------------- 4. accounting
if [ "$ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if ! mariadb-admin --socket=$DB_SOCK ping >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    setsid -f /usr/sbin/mariadbd --user=mysql --skip-networking --socket=$DB_SOCK \
      --pid-file=/run/mysqld/mysqld.pid --innodb-buffer-pool-size=256M \
      --innodb-lock-wait-timeout=900 >>$LOGDIR/mariadb.log 2>&1 </dev/null
    wait_for 60 mariadb-admin --socket=$DB_SOCK ping || { tail $LOGDIR/mariadb.log >&2; exit 1; }
  fi
  mariadb --socket=$DB_SOCK -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  log "mariadb up"
  before=$changed; changed=0
  put $ETC/slurmdbd.conf 0600 slurm:slurm <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
CommunicationParameters=NoInAddrAny
SlurmUser=slurm
LogFile=$LOGDIR/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
EOF
  if [ "$changed" = 1 ] && pid_alive /run/slurmdbd.pid; then
    log "slurmdbd.conf changed: restarting slurmdbd"
    kill "$(cat /run/slurmdbd.pid)"; wait_for 30 pid_dead /run/slurmdbd.pid || kill -9 "$(cat /run/slurmdbd.pid)"
  fi
  changed=$before
  if ! pid_alive /run/slurmdbd.pid; then slurmdbd; fi
  wait_for 60 sacctmgr -n list cluster || { tail $LOGDIR/slurmdbd.log >&2; exit 1; }
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n -P list account format=account | grep -qx "$CI_ACCOUNT" \
    || sacctmgr -i add account "$CI_ACCOUNT" Cluster="$CLUSTER" Description=ci Organization=ci >/dev/null
  sacctmgr -n -P -s list user root format=account | grep -qx "$CI_ACCOUNT" \
    || sacctmgr -i add user root Account="$CI_ACCOUNT" Cluster="$CLUSTER" >/dev/null
  log "slurmdbd up, cluster '$CLUSTER' and account '$CI_ACCOUNT' registered"
fi

# ---------------------------------------------------------------- 5. slurm daemons
# every slurmd this script may have started, under any earlier config (one node's
# /run/slurmd.pid before the multi-node layout)
SLURMD_PIDS=(/run/slurmd.pid /run/slurmd-*.pid)
if [ "$changed" = 1 ]; then
  log "config changed: restarting slurmctld/slurmd"
  for f in "${SLURMD_PIDS[@]}" /run/slurmctld.pid; do
    if pid_alive "$f"; then kill "$(cat "$f")"; wait_for 30 pid_dead "$f" || kill -9 "$(cat "$f")"; fi
  done
fi
pid_alive /run/slurmctld.pid || slurmctld
wait_for 30 scontrol ping || { tail $LOGDIR/slurmctld.log >&2; exit 1; }
for n in "${NODES[@]}"; do pid_alive "/run/slurmd-$n.pid" || slurmd -N "$n"; done
# wait until every node registers and is idle; un-drain one a previous run left down
for n in "${NODES[@]}"; do
  end=$(( $(date +%s) + 60 ))
  while :; do
    st=$(sinfo -h -N -n "$n" -o %T 2>/dev/null || true)
    case "$st" in
      idle|mixed|allocated) break ;;
      down*|drain*|inval*|fail*) scontrol update NodeName="$n" State=RESUME 2>/dev/null || true ;;
    esac
    [ "$(date +%s)" -ge "$end" ] && { echo "node $n state '$st' after 60s" >&2; tail "$LOGDIR/slurmd-$n.log" $LOGDIR/slurmctld.log >&2; exit 1; }
    sleep 0.25
  done
done
# the state above can come from slurmctld's saved state before slurmd re-registers:
# a one-second job proves that the node really runs work
if [ "${SLURM_SMOKE:-1}" = 1 ]; then
  timeout 60 srun -t 1 -J start-slurm-smoke true || { echo "smoke job failed" >&2; tail "$LOGDIR/slurmd-$NODE.log" >&2; exit 1; }
  [ ${#EXTRA[@]} -eq 0 ] || timeout 60 srun -t 1 -p multinode -N ${#EXTRA[@]} -J start-slurm-smoke true \
    || { echo "multinode smoke job failed" >&2; tail "$LOGDIR/slurmd-${EXTRA[0]}.log" >&2; exit 1; }
fi
log "slurm up: nodes ${NODES[*]}"
sinfo -N -o "%N %P %T %c %m %G"
