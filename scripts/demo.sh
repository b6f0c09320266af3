#!/usr/bin/env bash
# The demo: a Sluice router with the example tenants, and Debian's unmodified
# ibv_rc_pingpong (server and client) running as tenant "alpha" through
# libsluice-verbs.so. Everything is stopped and cleaned up at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SLUICE_BIN:-.build/debug}
LIB=${SLUICE_VERBS_LIB:-$PWD/.build/sluice/libsluice-verbs.so}
RUN=$(mktemp -d /tmp/sluice-demo.XXXXXX)
PORT=${SLUICE_DEMO_PORT:-18515}
ROUTER_PID=""

cleanup() {
  if [ -n "$ROUTER_PID" ] && kill -0 "$ROUTER_PID" 2>/dev/null; then
    kill -TERM "$ROUTER_PID"; wait "$ROUTER_PID" || true
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT

echo "== starting sluice-router (runtime dir $RUN)"
"$BIN/sluice-router" --runtime-dir "$RUN" --policies policies --audit-log "$RUN/audit.log" &
ROUTER_PID=$!
for _ in $(seq 100); do [ -S "$RUN/tenants/alpha.sock" ] && break; sleep 0.05; done
[ -S "$RUN/tenants/alpha.sock" ] || { echo "router did not start"; exit 1; }

tenant() { LD_PRELOAD="$LIB" SLUICE_SOCKET="$RUN/tenants/alpha.sock" "$@"; }

echo "== the device a tenant sees"
tenant ibv_devinfo -d sluice0 || tenant ibv_devices

echo "== ibv_rc_pingpong, 4096-byte messages, GID addressing (-g 0)"
tenant ibv_rc_pingpong -d sluice0 -g 0 -s 4096 -n 1000 -p "$PORT" > "$RUN/server.out" 2>&1 &
SERVER=$!
ok=""
for _ in $(seq 50); do
  if tenant ibv_rc_pingpong -d sluice0 -g 0 -s 4096 -n 1000 -p "$PORT" 127.0.0.1 > "$RUN/client.out" 2>&1; then ok=1; break; fi
  grep -q "Couldn't connect" "$RUN/client.out" || break
  sleep 0.1
done
wait "$SERVER" || { echo "server failed:"; cat "$RUN/server.out"; exit 1; }
[ -n "$ok" ] || { echo "client failed:"; cat "$RUN/client.out"; exit 1; }
echo "-- server:"; cat "$RUN/server.out"
echo "-- client:"; cat "$RUN/client.out"

echo "== router status after the run (everything reclaimed)"
"$BIN/sluice" status --runtime-dir "$RUN"

echo "== last audit records"
tail -n 5 "$RUN/audit.log"
echo "== demo finished"
