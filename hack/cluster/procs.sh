# Sourced by the cluster scripts: how a component of the local cluster runs as a plain process.
#   start NAME ARGS...         starts it in its own process group, its log in logs/NAME.log, its pid and
#                              command line (for restart.sh) in $CLUSTER_DIR
#   stop NAME                  stops it (its whole process group: SIGTERM, then SIGKILL after 5 s)
#   wait_for WHAT SECS CMD...  waits until CMD succeeds, or dies saying what it waited for (the caller's die)
start() {
  local name=$1
  shift
  # setsid: the component gets its own process group, so down.sh can stop it and all it spawned.
  setsid "$@" >"$CLUSTER_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$CLUSTER_DIR/$name.pid"
  # The command line, for restart.sh.
  printf '%q ' "$@" >"$CLUSTER_DIR/$name.cmd"
}

wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || die "timed out after ${secs}s waiting for $what (logs in $CLUSTER_DIR/logs)"
    sleep 0.2
  done
}

stop() {
  local name=$1 pidfile=$CLUSTER_DIR/$1.pid pid
  [[ -f $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}
