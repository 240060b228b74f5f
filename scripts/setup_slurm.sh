#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for tests/test_slurm.py (the real submitit_slurm launcher path).
# Needs root and the apt packages of scripts/setup_system.sh (slurm-wlm, munge). Idempotent: when slurmctld and
# slurmd already answer and the node is usable, it does nothing.
#
#   munge key      /etc/munge/munge.key (the package's, or a new random one); munged runs as user munge
#   slurm.conf     /etc/slurm/slurm.conf: SlurmctldHost = this host, one node (CPUs = nproc, RealMemory a bit
#                  below the machine's), one default partition; select/cons_tres (CR_CPU_Memory),
#                  proctrack/linuxproc + task/none (no cgroups needed), no accounting (submitit then reads a job's
#                  end from its result file; `sacct` is not available)
#   daemons        munged, slurmctld, slurmd (logs in /var/log/slurm/)
# Exit status 0 = SLURM is up and `srun hostname` works; anything else = it is not (the message says why).
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "[setup_slurm] needs root (writes /etc/slurm, starts daemons)" >&2
  exit 2
fi
for bin in munged slurmctld slurmd sinfo srun; do
  command -v "$bin" >/dev/null 2>&1 || { echo "[setup_slurm] $bin not found: run scripts/setup_system.sh" >&2; exit 3; }
done

HOST="$(hostname -s)"
CONF=/etc/slurm/slurm.conf

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -n1 | tr -d '*~#!%$@^-'; }

running() { pgrep -x "$1" >/dev/null 2>&1; }

if running munged && running slurmctld && running slurmd && [ -f "$CONF" ] \
   && case "$(node_state)" in idle|mixed|allocated|completing) true ;; *) false ;; esac; then
  echo "[setup_slurm] already running: node $HOST $(node_state)"
  exit 0
fi

# --- munge -----------------------------------------------------------------------------------------------------
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
chmod 0700 /etc/munge /var/log/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! running munged; then
  runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { echo "[setup_slurm] munge does not work" >&2; exit 4; }

# --- slurm.conf ------------------------------------------------------------------------------------------------
CPUS="$(nproc)"
MEM_MB="$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
REAL_MB=$(( MEM_MB * 90 / 100 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$CONF.new" <<CONF
# Written by scripts/setup_slurm.sh: a one-node test cluster (no cgroups, no accounting).
ClusterName=medsynbench
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$CONF.new" "$CONF"; then
  mv "$CONF.new" "$CONF"
  changed=1
else
  rm -f "$CONF.new"
  changed=0
fi

# --- daemons ---------------------------------------------------------------------------------------------------
if [ "$changed" = 1 ]; then  # a new configuration: restart what runs with the old one
  for d in slurmd slurmctld; do
    if running "$d" && [ -s "/run/$d.pid" ]; then kill "$(cat "/run/$d.pid")" 2>/dev/null || true; fi
  done
  for _ in $(seq 50); do running slurmd || running slurmctld || break; sleep 0.1; done
fi
running slurmctld || slurmctld
for _ in $(seq 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
running slurmd || slurmd
state=""
for _ in $(seq 150); do
  state="$(node_state)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down|drained|draining|drain) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) echo "[setup_slurm] node $HOST is '$state', not usable; see /var/log/slurm/" >&2
     sinfo -N -l >&2 || true; exit 5 ;;
esac
out="$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1)" || { echo "[setup_slurm] srun hostname failed: $out" >&2; exit 6; }
echo "[setup_slurm] SLURM up: node $HOST ($CPUS CPUs, ${REAL_MB} MB), srun hostname -> $out"
