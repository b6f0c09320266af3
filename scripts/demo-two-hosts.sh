#!/usr/bin/env bash
# The second half of the demo: two hosts as network namespaces (a veth each
# into a bridge in a third, "switch" namespace), a Sluice router on each,
# linked by the fabric, and Debian's unmodified ibv_rc_pingpong with its
# server on host 1 and its client on host 2. Needs root and `ip netns`;
# otherwise it says why and stops. Nothing is created outside the
# namespaces and the temporary directory, and all of it is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${SLUICE_BIN:-.build/debug}
LIB=${SLUICE_VERBS_LIB:-$PWD/.build/sluice/libsluice-verbs.so}
PORT=${SLUICE_DEMO_PORT:-18516}

if [ "$(id -u)" != 0 ]; then echo "== two hosts: skipped (network namespaces need root)"; exit 0; fi
TAG=sluicedemo-$$
SW=$TAG-sw; H1=$TAG-h1; H2=$TAG-h2
if ! ip netns add "$SW" 2>/dev/null; then echo "== two hosts: skipped (ip netns add fails here)"; exit 0; fi
RUN=$(mktemp -d /tmp/sluice-demo2.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  for ns in "$H1" "$H2" "$SW"; do ip netns del "$ns" 2>/dev/null || true; done
  [ -n "${SLUICE_DEMO_KEEP:-}" ] || rm -rf "$RUN"
}
trap cleanup EXIT

# A /24 that no address or route of this machine uses.
used=$(ip -4 -o addr; ip -4 route)
for _ in $(seq 100); do
  NET="10.$((RANDOM % 90 + 160)).$((RANDOM % 256))"
  grep -q "$NET\." <<<"$used" || break
done
echo "== two hosts on $NET.0/24: $H1 ($NET.1) and $H2 ($NET.2)"
ip -n "$SW" link add br0 type bridge; ip -n "$SW" link set br0 up
i=1
for h in "$H1" "$H2"; do
  ip netns add "$h"
  ip -n "$SW" link add "port$i" type veth peer name eth0 netns "$h"
  ip -n "$SW" link set "port$i" master br0 up
  ip -n "$h" link set lo up
  ip -n "$h" addr add "$NET.$i/24" dev eth0
  ip -n "$h" link set eth0 up
  i=$((i + 1))
done

head -c 32 /dev/urandom > "$RUN/cluster.key"; chmod 600 "$RUN/cluster.key"
cat > "$RUN/cluster.yaml" <<YAML
apiVersion: sluice/v1
kind: Cluster
spec:
  routers:
    # Each router owns half of every example tenant's addressPool
    # (policies/*.yaml), and half of the shared pool for tenants without one.
    - name: host-1
      fabric: $NET.1:7470
      lids: [1-4095]
      addresses: [10.77.1.0/25, 10.77.2.0/25, 10.77.3.0/25, 10.77.4.0/25, 10.77.128.0/18]
    - name: host-2
      fabric: $NET.2:7470
      lids: [4096-8191]
      addresses: [10.77.1.128/25, 10.77.2.128/25, 10.77.3.128/25, 10.77.4.128/25, 10.77.192.0/18]
YAML
i=1
for h in "$H1" "$H2"; do
  mkdir -p "$RUN/host-$i"
  ip netns exec "$h" "$BIN/sluice-router" --runtime-dir "$RUN/host-$i" --policies policies \
    --cluster-key "$RUN/cluster.key" --router-name "host-$i" --cluster-file "$RUN/cluster.yaml" 2>"$RUN/router-$i.err" &
  PIDS+=($!)
  i=$((i + 1))
done
for _ in $(seq 200); do
  "$BIN/sluice" status --json --runtime-dir "$RUN/host-1" 2>/dev/null | grep -q '"state":"idle"' && break
  sleep 0.05
done
"$BIN/sluice" status --json --runtime-dir "$RUN/host-1" | grep -q '"state":"idle"' || { echo "the routers did not start"; cat "$RUN"/router-*.err; exit 1; }
echo "== the routers run; no link yet (links are made when a QP first needs one)"

tenant() { local h=$1; shift; ip netns exec "$h" env LD_PRELOAD="$LIB" SLUICE_SOCKET="$RUN/$1/tenants/alpha.sock" "${@:2}"; }
# -e: the ping-pongs sleep on their completion channels. Both "hosts" share
# this machine's CPUs with both routers; two busy-polling tenants would take
# the routers' CPU time and make each round trip wait for a scheduler slice
# (about 12 ms here without -e, 1.5 ms with it, on the debug build).
for size in 4096 65536; do
  echo "== ibv_rc_pingpong -e across hosts, $size-byte messages: server on host-1, client on host-2"
  tenant "$H1" host-1 ibv_rc_pingpong -e -d sluice0 -g 0 -s "$size" -n 500 -p "$PORT" > "$RUN/server.out" 2>&1 &
  SERVER=$!
  ok=""
  for _ in $(seq 50); do
    if tenant "$H2" host-2 ibv_rc_pingpong -e -d sluice0 -g 0 -s "$size" -n 500 -p "$PORT" "$NET.1" > "$RUN/client.out" 2>&1; then ok=1; break; fi
    grep -q "Couldn't connect" "$RUN/client.out" || break
    sleep 0.1
  done
  # A client that never got through leaves the server waiting: end it.
  [ -n "$ok" ] || { kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; echo "client failed:"; cat "$RUN/client.out"; exit 1; }
  wait "$SERVER" || { echo "server failed:"; cat "$RUN/server.out"; exit 1; }
  echo "-- client:"; cat "$RUN/client.out"
  PORT=$((PORT + 1))
done
"$BIN/sluice" status --json --runtime-dir "$RUN/host-1" | grep -q '"state":"up"' || { echo "no link after the runs"; exit 1; }
echo "== the routers linked on first use (authenticated with the cluster key)"
echo "== two hosts finished"
