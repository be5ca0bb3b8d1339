#!/usr/bin/env bash
# Starts a real one-node Slurm cluster on this Debian machine (run as root), for
# the tests marked `slurm` and for trying seqjax's cluster commands locally.
#
#   sudo bash scripts/slurm_cluster.sh          # install (apt), configure, start; idempotent
#   sudo bash scripts/slurm_cluster.sh stop     # stop the daemons
#
# Installs Debian's slurm-wlm and munge, generates a munge key, writes
# /etc/slurm/slurm.conf for one node (this host, all its CPUs) in one default
# partition `debug`, and starts munged (as user munge), slurmctld and slurmd.
# Ends when `sinfo` shows the node idle, or fails saying what did not start.
set -euo pipefail

state=/var/lib/seqjax-slurm
conf=/etc/slurm/slurm.conf

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  pkill -x munged || true
  for _ in $(seq 40); do  # until they have exited
    pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || pgrep -x munged >/dev/null || return 0
    sleep 0.25
  done
}

if [[ "${1:-}" == "stop" ]]; then
  stop
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "scripts/slurm_cluster.sh must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge
fi

# munge: a key readable only by the munge user, daemon run as that user.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0711 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge
if [[ ! -s /etc/munge/munge.key ]]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi

# slurm.conf: this host as the controller and the only node.
host=$(hostname -s)
cpus=$(nproc)
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
install -d -m 0755 "$state" "$state/ctld" "$state/d" /var/log/slurm /run/slurm
cat >"$conf" <<EOF
# Written by seqjax's scripts/slurm_cluster.sh: a one-node test cluster.
ClusterName=seqjax
SlurmctldHost=$host
AuthType=auth/munge
# Job credentials expire after 10 s instead of 120: Slurm holds a requeued job
# that long (so it cannot start while its old credential is still revoked).
AuthInfo=cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# Look at pending jobs every 2 s (default 60 / 30): a requeued job starts soon after its hold.
SchedulerParameters=sched_interval=2,bf_interval=2
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Jobs may be requeued (preemption tests); a job that exits 75 (EX_TEMPFAIL,
# seqjax's exit status after a preemption signal) is requeued by Slurm.
JobRequeue=1
RequeueExit=75
# Short timeouts: a test cluster answers fast or not at all.
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# Debian's slurm also reads cgroup.conf when present; none of its plugins are used here.

if pgrep -x slurmctld >/dev/null && ! cmp -s "$conf" "$conf.running"; then
  stop  # a changed slurm.conf: restart the daemons (reconfigure does not apply every setting)
fi
cp "$conf" "$conf.running"
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- /usr/sbin/munged
fi
if ! pgrep -x slurmctld >/dev/null; then
  /usr/sbin/slurmctld -i
fi
if ! pgrep -x slurmd >/dev/null; then
  /usr/sbin/slurmd
fi

for _ in $(seq 60); do
  if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    sinfo
    exit 0
  fi
  sleep 1
done
echo "Slurm did not come up; the logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
