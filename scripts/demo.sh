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
# An operator key makes the router sign checkpoints of its audit log.
head -c 32 /dev/urandom > "$RUN/audit.key"; chmod 600 "$RUN/audit.key"
"$BIN/sluice-router" --runtime-dir "$RUN" --policies policies --audit-log "$RUN/audit.log" --audit-key "$RUN/audit.key" &
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

echo "== what may a restricted tenant do? (sluice policy explain)"
"$BIN/sluice" policy explain --policies policies --tenant beta reg-mr --bytes 1Gi --access remoteWrite || true

echo "== stopping the router; its audit log verifies and summarizes"
kill -TERM "$ROUTER_PID"; wait "$ROUTER_PID" || true
ROUTER_PID=""
"$BIN/sluice" audit verify "$RUN/audit.log" --checkpoints "$RUN/audit.log.checkpoints" --key-file "$RUN/audit.key"
"$BIN/sluice" audit report "$RUN/audit.log"
echo "== demo finished"
