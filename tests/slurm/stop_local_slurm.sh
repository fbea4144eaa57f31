#!/usr/bin/env bash
# Stop the local SLURM started by start_local_slurm.sh: cancel its jobs, then stop exactly
# the daemons whose pids it recorded in /run/maggotflow-slurm/ (never by name).
set -uo pipefail
STATE=/run/maggotflow-slurm
say() { echo "local-slurm: $*" >&2; }
alive() { [ -s "$1" ] && [ "$(cat "/proc/$(cat "$1")/comm" 2>/dev/null)" = "$2" ]; }

[ -d "$STATE" ] || { say "nothing to stop"; exit 0; }
if alive "$STATE/slurmctld.pid" slurmctld; then
    scancel --full --user="$(id -un)" 2>/dev/null || true
    # give slurmd a moment to kill the job steps before it goes away itself
    for _ in $(seq 20); do [ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ] && break; sleep 0.5; done
fi
for entry in slurmd.pid:slurmd slurmctld.pid:slurmctld munged.pid:munged; do
    pidfile="$STATE/${entry%%:*}" name="${entry##*:}"
    alive "$pidfile" "$name" || continue
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) still running after 10 s: SIGKILL"
        kill -9 "$pid" 2>/dev/null
    fi
    say "stopped $name (pid $pid)"
    rm -f "$pidfile"
done
rm -f "$STATE/owner" "$STATE/owner_cmd"
