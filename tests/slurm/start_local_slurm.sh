#!/usr/bin/env bash
# Start a real one-node SLURM (munge + slurmctld + slurmd, Debian packages) on localhost,
# without systemd, for the SLURM tests and benchmarks. Run as root. Installs the packages
# munge slurmctld slurmd slurm-client when missing (`apt-get update` once, then install).
#
# Exit codes: 0 = cluster up (node idle); 77 = unavailable here (not root, not Debian-like,
# packages cannot be installed); 75 = busy (a local SLURM owned by a live process is already
# running on this machine); anything else = the cluster failed to start (logs printed).
#
# Settings (environment):
#   LOCAL_SLURM_PARTITIONS  partitions, comma separated; first = default (default: cpu,gpu)
#   LOCAL_SLURM_GPUS        fake GPUs advertised as gres/gpu (default: 2)
#   LOCAL_SLURM_CPUS        CPUs advertised (default: the real count; more = oversubscribed)
#   LOCAL_SLURM_MEM         memory advertised, MB (default: 90% of the real memory); jobs'
#                           --mem is not enforced (no cgroups), so a larger value lets
#                           retried jobs (memory x attempt) run on a small CI machine
#   LOCAL_SLURM_OWNER       pid that owns the cluster (default: the parent shell); a cluster
#                           whose owner died is considered stale and restarted
#   LOCAL_SLURM_TIMEOUT     seconds to wait for the node to become idle (default: 60)
#
# State (pids, owner) goes to /run/maggotflow-slurm/; stop_local_slurm.sh stops exactly
# those pids. There is no accounting database: clients must poll with squeue
# (slurm-status-command: squeue), which MinJobAge=300 makes reliable.
set -euo pipefail

STATE=/run/maggotflow-slurm
PARTITIONS="${LOCAL_SLURM_PARTITIONS:-cpu,gpu}"
GPUS="${LOCAL_SLURM_GPUS:-2}"
OWNER="${LOCAL_SLURM_OWNER:-$PPID}"
TIMEOUT="${LOCAL_SLURM_TIMEOUT:-60}"
NODE="$(hostname -s 2>/dev/null || echo localhost)"

say() { echo "local-slurm: $*" >&2; }
unavailable() { say "unavailable: $*"; exit 77; }
fail() {
    say "ERROR: $*"
    for f in /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; do
        [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }
    done
    exit 1
}
# alive PIDFILE COMM: the pid in PIDFILE runs a process named COMM (no stale pid reuse)
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

[ "$(id -u)" -eq 0 ] || unavailable "must run as root (daemons, /etc/slurm, apt-get)"
started=$(date +%s)

# ---- busy or stale?
if [ -d "$STATE" ] && { alive "$STATE/slurmctld.pid" slurmctld || alive "$STATE/slurmd.pid" slurmd; }; then
    owner=$(cat "$STATE/owner" 2>/dev/null || echo 0)
    if [ "$owner" != "$OWNER" ] && kill -0 "$owner" 2>/dev/null; then
        say "busy: a local SLURM started for pid $owner is running ($(tr '\n' ' ' < "$STATE/owner_cmd" 2>/dev/null))"
        exit 75
    fi
    say "stopping a stale local SLURM (owner pid $owner gone)"
    "$(dirname "$0")/stop_local_slurm.sh"
fi
if [ "$(cat /proc/"$(cat /run/slurmctld.pid 2>/dev/null || echo 0)"/comm 2>/dev/null)" = slurmctld ]; then
    say "busy: a slurmctld not started by this script is running (pid $(cat /run/slurmctld.pid))"
    exit 75
fi

# ---- packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    command -v apt-get >/dev/null || unavailable "SLURM is not installed and there is no apt-get"
    say "installing munge slurmctld slurmd slurm-client"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || unavailable "apt-get update failed"
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client >/dev/null \
        || unavailable "apt-get install munge slurmctld slurmd slurm-client failed"
    installed_now=1
fi

install -d -m 0755 "$STATE"
echo "$OWNER" > "$STATE/owner"
tr '\0' ' ' < "/proc/$OWNER/cmdline" > "$STATE/owner_cmd" 2>/dev/null || true

# ---- munge: authentication between the SLURM daemons and clients
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if [ -n "${installed_now:-}" ] && alive /run/munge/munged.pid munged; then
    cp /run/munge/munged.pid "$STATE/munged.pid"   # the package's postinst started it: ours
elif ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null || fail "munged does not answer (/var/log/munge/munged.log)"
    alive /run/munge/munged.pid munged && cp /run/munge/munged.pid "$STATE/munged.pid"
fi

# ---- configuration: one node with the machine's memory, optional fake GPUs
hw=$(slurmd -C | head -n 1)
get() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<< " $hw"; }
cpus=$(get CPUs); mem=$(get RealMemory)
[ -n "$cpus" ] && [ -n "$mem" ] || fail "cannot read the hardware from 'slurmd -C': $hw"
topology="Boards=$(get Boards) SocketsPerBoard=$(get SocketsPerBoard) CoresPerSocket=$(get CoresPerSocket) ThreadsPerCore=$(get ThreadsPerCore)"
overrides=""
if [ -n "${LOCAL_SLURM_CPUS:-}" ]; then
    cpus=$LOCAL_SLURM_CPUS
    topology="Boards=1 SocketsPerBoard=1 CoresPerSocket=$cpus ThreadsPerCore=1"
    overrides="SlurmdParameters=config_overrides"
fi
mem=$((mem * 9 / 10))
if [ -n "${LOCAL_SLURM_MEM:-}" ]; then   # nothing enforces memory here (no cgroups)
    mem=$LOCAL_SLURM_MEM
    overrides="SlurmdParameters=config_overrides"
fi
gres_types=""; gres=""
if [ "$GPUS" -gt 0 ]; then
    # gres/gpu needs device files; character devices like /dev/null (1,3) satisfy slurmd,
    # which then sets CUDA_VISIBLE_DEVICES in GPU jobs. There is no GPU behind them.
    install -d -m 0755 "$STATE/gpu"
    for i in $(seq 0 $((GPUS - 1))); do
        [ -e "$STATE/gpu/$i" ] || mknod -m 0666 "$STATE/gpu/$i" c 1 3
    done
    gres_types="GresTypes=gpu"
    gres="Gres=gpu:$GPUS"
    files="$STATE/gpu/0"; [ "$GPUS" -gt 1 ] && files="$STATE/gpu/[0-$((GPUS - 1))]"
    printf 'AutoDetect=off\nNodeName=%s Name=gpu File=%s\n' "$NODE" "$files" > /etc/slurm/gres.conf.new
fi
install -d -m 0755 /etc/slurm /var/log/slurm /var/spool/slurmd /var/spool/slurmctld
rm -rf /var/spool/slurmd/* /var/spool/slurmctld/*    # a fresh cluster: no old jobs
if [ "$GPUS" -gt 0 ]; then mv /etc/slurm/gres.conf.new /etc/slurm/gres.conf; else rm -f /etc/slurm/gres.conf; fi
{
    cat <<EOF
# Written by maggotflow tests/slurm/start_local_slurm.sh: one node, no accounting, no cgroups.
ClusterName=maggotflow-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# Finished jobs stay visible to squeue for 5 min: Snakemake's squeue status polling needs it.
MinJobAge=300
DefMemPerCPU=500
ReturnToService=2
MailProg=/bin/true
KillWait=5
InactiveLimit=0
$gres_types
$overrides
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus $topology RealMemory=$mem $gres State=UNKNOWN
EOF
    default=YES
    for part in ${PARTITIONS//,/ }; do
        echo "PartitionName=$part Nodes=$NODE Default=$default MaxTime=INFINITE State=UP"
        default=NO
    done
} > /etc/slurm/slurm.conf

# ---- daemons (both daemonize and write their pid files into $STATE)
slurmctld || fail "slurmctld did not start"
for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || fail "slurmctld does not answer"
slurmd -N "$NODE" || fail "slurmd did not start"
deadline=$(($(date +%s) + TIMEOUT))
while :; do
    state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
    case "$state" in
        idle) break ;;
        inval*) scontrol show node "$NODE" >&2; fail "node $NODE INVALID (slurm.conf/gres.conf vs hardware)" ;;
        down* | drain*) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    [ "$(date +%s)" -lt "$deadline" ] || fail "node $NODE is '$state', not idle, after ${TIMEOUT}s"
    sleep 0.5
done
say "up in $(($(date +%s) - started)) s: node $NODE, $cpus CPUs, $GPUS fake GPU(s), partitions $PARTITIONS;" \
    "pids slurmctld=$(cat "$STATE/slurmctld.pid") slurmd=$(cat "$STATE/slurmd.pid")" \
    "munged=$(cat "$STATE/munged.pid" 2>/dev/null || echo 'already running')"
