#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the integration tests (run as root).
#
#   slurm/local-cluster.sh up       install slurm-wlm + munge if missing, start munged, slurmctld,
#                                   slurmd; wait until the node is idle (idempotent)
#   slurm/local-cluster.sh down     stop the daemons by their pid files
#   slurm/local-cluster.sh status   daemons and `sinfo`; exit status 0 when the node is usable
#
# Environment: DIFFDA_SLURM_DIR (state, spool, logs, pid files, the generated slurm.conf;
# default /var/tmp/diffda-slurm), DIFFDA_SLURM_PARTITION (default debug), DIFFDA_SLURM_CPUS
# (default nproc), DIFFDA_SLURM_MEM_MB (default 3/4 of MemTotal), DIFFDA_SLURM_WAIT_S (60).
# Client commands (sinfo, srun, sbatch) find the config at /etc/slurm/slurm.conf, a link to the
# generated one; `export SLURM_CONF=$DIFFDA_SLURM_DIR/etc/slurm.conf` does the same.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DIR="${DIFFDA_SLURM_DIR:-/var/tmp/diffda-slurm}"
CONF="$DIR/etc/slurm.conf"
TEMPLATE="$HERE/test-cluster/slurm.conf.in"
PARTITION="${DIFFDA_SLURM_PARTITION:-debug}"
WAIT_S="${DIFFDA_SLURM_WAIT_S:-60}"
HOST="$(hostname -s)"
MARKER="# diffda single-node SLURM test cluster"

log() { echo "local-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() { [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons)"; }

install_packages() {
  local missing=0 c
  for c in slurmctld slurmd sinfo srun sbatch munged munge; do
    command -v "$c" >/dev/null 2>&1 || missing=1
  done
  [ "$missing" = 0 ] && return 0
  log "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null; then
    log "apt-get install failed; running apt-get update first"
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null
  fi
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if [ ! -s /etc/munge/munge.key ]; then
    log "generating /etc/munge/munge.key"
    mkdir -p /etc/munge
    ( umask 077; dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none )
  fi
  if id munge >/dev/null 2>&1; then chown munge:munge /etc/munge /etc/munge/munge.key; fi
  chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key
  munge_ok && return 0
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  log "starting munged"
  munged --force
  touch "$DIR/run/munged.ours"
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
  die "munged does not answer (munge -n | unmunge fails)"
}

# SLURM binds to the host name's address (no bind address of its own): only a loopback one keeps it local.
comm_params() {
  local addr
  addr="$(getent ahostsv4 "$(hostname)" | awk 'NR == 1 {print $1}')"
  case "$addr" in
    127.*) echo "CommunicationParameters=NoInAddrAny,NoCtldInAddrAny" ;;
    *) log "warning: $(hostname) resolves to ${addr:-nothing}, not loopback; the daemons listen on all addresses"
       echo "# CommunicationParameters left at its default: $(hostname) resolves to ${addr:-nothing}" ;;
  esac
}

render_conf() {
  local cpus mem_total mem def_mem
  cpus="${DIFFDA_SLURM_CPUS:-$(nproc)}"
  mem_total=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
  mem="${DIFFDA_SLURM_MEM_MB:-$(( mem_total * 3 / 4 ))}"
  [ "$mem" -lt "$mem_total" ] || die "DIFFDA_SLURM_MEM_MB=$mem must be below the machine's $mem_total MB"
  def_mem=$(( mem / cpus < 1024 ? mem / cpus : 1024 ))
  sed -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem|g" -e "s|@DIR@|$DIR|g" \
      -e "s|@PARTITION@|$PARTITION|g" -e "s|@DEF_MEM_PER_CPU@|$def_mem|g" \
      -e "s|@COMM_PARAMS@|$(comm_params)|g" \
      -e "s|@CTLD_PORT@|${DIFFDA_SLURM_CTLD_PORT:-6817}|g" -e "s|@SLURMD_PORT@|${DIFFDA_SLURM_SLURMD_PORT:-6818}|g" \
      "$TEMPLATE"
}

# Writes the config; returns 0 when it changed (daemons must restart), 1 when it did not.
write_conf() {
  mkdir -p "$DIR"/{etc,run,state,spool,log}
  local new="$CONF.new"
  render_conf > "$new"
  if [ -f "$CONF" ] && cmp -s "$new" "$CONF"; then rm -f "$new"; changed=1; else mv "$new" "$CONF"; changed=0; fi
  mkdir -p /etc/slurm
  if [ -L /etc/slurm/slurm.conf ] || [ ! -e /etc/slurm/slurm.conf ] || head -1 /etc/slurm/slurm.conf | grep -q "^$MARKER"; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    log "warning: /etc/slurm/slurm.conf is someone else's; export SLURM_CONF=$CONF to use this cluster"
  fi
  return $changed
}

pid_alive() {  # pid_alive NAME -> 0 when the daemon in NAME's pid file runs
  local f="$DIR/run/$1.pid"
  [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

stop_daemon() {
  local name="$1" f="$DIR/run/$1.pid" pid
  if ! pid_alive "$name"; then rm -f "$f"; return 0; fi
  pid="$(cat "$f")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$f"
}

node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }

wait_idle() {
  local deadline=$(( $(date +%s) + WAIT_S )) state=""
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state="$(node_state || true)"
    case "$state" in
      idle|mixed|allocated|completing) log "node $HOST is $state"; return 0 ;;
      down*|drain*|drained*|fail*)
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  log "node $HOST is '${state:-unknown}' after ${WAIT_S} s; see $DIR/log/slurmctld.log and slurmd.log"
  return 1
}

cmd_up() {
  need_root
  install_packages
  mkdir -p "$DIR"/{etc,run,state,spool,log}
  start_munge
  if write_conf; then
    log "wrote $CONF"
    stop_daemon slurmd
    stop_daemon slurmctld
  fi
  if ! pid_alive slurmctld; then log "starting slurmctld"; slurmctld -f "$CONF"; fi
  for _ in $(seq 50); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  if ! pid_alive slurmd; then log "starting slurmd"; slurmd -f "$CONF"; fi
  wait_idle
  sinfo
}

cmd_down() {
  stop_daemon slurmd
  stop_daemon slurmctld
  if [ -f "$DIR/run/munged.ours" ]; then
    if [ -s /run/munge/munged.pid ]; then
      echo "$(cat /run/munge/munged.pid)" > "$DIR/run/munged.pid"
      stop_daemon munged
    fi
    rm -f "$DIR/run/munged.ours"
  fi
}

cmd_status() {
  local name ok=0
  for name in slurmctld slurmd; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"; else echo "$name: stopped"; ok=1; fi
  done
  if munge_ok; then echo "munged: running"; else echo "munged: not answering"; ok=1; fi
  if [ "$ok" = 0 ]; then
    sinfo || ok=1
    case "$(node_state)" in idle|mixed|allocated|completing) ;; *) ok=1 ;; esac
  fi
  return $ok
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
