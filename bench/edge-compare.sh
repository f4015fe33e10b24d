#!/usr/bin/env bash
# entitle's sync path against Unleash Edge 20.1.0 (issue 14), on this machine.
#
#   bench/edge-compare.sh            # 1,000,000 devices, 3 rounds of 10 s
#   DEVICES=10000 ROUNDS=1 bench/edge-compare.sh
#
# Installs Edge into ${XDG_CACHE_HOME:-$HOME/.cache}/entitle-bench/edge on first
# use (a long compile), installs wrk with apt-get if it is missing, builds
# entitle in release. Then it serves both on loopback:
#   - entitle: `entitle bench --sync-target` (a fresh SQLite tenant with
#     $DEVICES devices and $USERS users seeded in bulk, one device enrolled
#     over HTTP, whose token, body and ETag wrk sends to POST /agent/v1/sync);
#   - Edge: `unleash-edge offline` with a bootstrap file of three flags whose
#     constraints mirror entitle's three services (user groups, device group,
#     client version), asked GET /api/frontend with the same device's context
#     as query parameters.
# and runs `wrk -t1 -c32 -d$DURATION` in alternating rounds (entitle 200, Edge
# 200, entitle 304, Edge 304), printing each round, the medians and the
# ratios entitle/Edge. Edge answers ETag and honours If-None-Match, but only
# after evaluating and serialising the answer (its etag middleware hashes the
# body): its 304 path is what wrk measures as "Edge 304".
#
# Not part of .ci/run: it takes minutes and needs the network once (cargo, apt).
set -euo pipefail

DEVICES=${DEVICES:-1000000}
USERS=${USERS:-100000}
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
CONNECTIONS=${CONNECTIONS:-32}
ENTITLE_PORT=${ENTITLE_PORT:-18480}
EDGE_PORT=${EDGE_PORT:-13063}
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/entitle-bench"
EDGE_ROOT="$CACHE/edge"
EDGE="$EDGE_ROOT/bin/unleash-edge"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

say() { printf '%s\n' "$*" >&2; }

if [[ ! -x "$EDGE" ]]; then
  say "installing Unleash Edge 20.1.0 into $EDGE_ROOT (first use; this compiles for a long time)"
  mkdir -p "$EDGE_ROOT"
  cargo install unleash-edge --version 20.1.0 --locked --no-default-features --root "$EDGE_ROOT"
fi
if ! command -v wrk >/dev/null; then
  say "installing wrk"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO=sudo
  $SUDO apt-get update
  $SUDO apt-get install -y wrk
fi
if [[ -z "${ENTITLE_BIN:-}" ]]; then
  (cd "$REPO" && cargo build --release -p entitle)
  ENTITLE_BIN="$REPO/target/release/entitle"
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/edge-compare.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- entitle ---------------------------------------------------------------
say "entitle: seeding $DEVICES devices and $USERS users (SQLite) and serving on 127.0.0.1:$ENTITLE_PORT"
"$ENTITLE_BIN" bench --sync-target --devices "$DEVICES" --users "$USERS" \
  --listen "127.0.0.1:$ENTITLE_PORT" --out "$WORK/entitle" >"$WORK/entitle.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 3600); do
  [[ -f "$WORK/entitle/ready" ]] && break
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then cat "$WORK/entitle.log" >&2; exit 1; fi
  sleep 1
done
[[ -f "$WORK/entitle/ready" ]] || { cat "$WORK/entitle.log" >&2; exit 1; }
cat "$WORK/entitle.log" >&2
export ENTITLE_SYNC_DIR="$WORK/entitle"
ENTITLE_URL="http://127.0.0.1:$ENTITLE_PORT"

# --- Edge ------------------------------------------------------------------
# Three flags mirroring entitle's services for the bench device (ada's
# corporate macOS laptop, client 4.3.0, in Platform nested in Engineering):
#   private_access: the user's group IN the selected groups;
#   device_group:   os IN the group's systems AND ownership IN [corporate];
#   internet_access: client version at least the service's minimum (Unleash
#                    has no SEMVER_GTE: "not SEMVER_LT" is the same rule).
# Unleash's IN compares one context value with a list, so the context carries
# the group that selects the user (entitle closes nested groups itself).
cat >"$WORK/bootstrap.json" <<'JSON'
{
  "version": 2,
  "features": [
    {
      "name": "private_access", "type": "release", "enabled": true, "project": "default",
      "strategies": [{"name": "default", "parameters": {}, "constraints": [
        {"contextName": "group", "operator": "IN", "values": ["Engineering", "Finance"], "inverted": false, "caseInsensitive": false}
      ]}]
    },
    {
      "name": "device_group", "type": "release", "enabled": true, "project": "default",
      "strategies": [{"name": "default", "parameters": {}, "constraints": [
        {"contextName": "os", "operator": "IN", "values": ["windows", "macos", "linux"], "inverted": false, "caseInsensitive": false},
        {"contextName": "ownership", "operator": "IN", "values": ["corporate"], "inverted": false, "caseInsensitive": false}
      ]}]
    },
    {
      "name": "internet_access", "type": "release", "enabled": true, "project": "default",
      "strategies": [{"name": "default", "parameters": {}, "constraints": [
        {"contextName": "clientVersion", "operator": "SEMVER_LT", "value": "4.0.0", "inverted": true, "caseInsensitive": false}
      ]}]
    }
  ]
}
JSON
EDGE_TOKEN='*:development.entitlebenchfrontendtoken'
say "Edge: offline on 127.0.0.1:$EDGE_PORT"
RUST_LOG=warn "$EDGE" --port "$EDGE_PORT" --interface 127.0.0.1 offline \
  --bootstrap-file "$WORK/bootstrap.json" \
  --client-tokens '*:development.entitlebenchclienttoken' \
  --frontend-tokens "$EDGE_TOKEN" >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
EDGE_URL="http://127.0.0.1:$EDGE_PORT"
for _ in $(seq 1 100); do
  curl -fsS "$EDGE_URL/internal-backstage/health" >/dev/null 2>&1 && break
  sleep 0.2
done
export EDGE_TOKEN
export EDGE_PATH="/api/frontend?userId=ada%40acme.example&properties%5Bgroup%5D=Engineering&properties%5Bos%5D=macos&properties%5Bownership%5D=corporate&properties%5BclientVersion%5D=4.3.0"

# --- check both answer what the rounds measure -----------------------------
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
TOKEN=$(cat "$WORK/entitle/token")
ETAG=$(cat "$WORK/entitle/etag")
BODY="$WORK/entitle/body.json"
s200=$(status -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' --data-binary "@$BODY" "$ENTITLE_URL/agent/v1/sync")
s304=$(status -X POST -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' -H "If-None-Match: $ETAG" --data-binary "@$BODY" "$ENTITLE_URL/agent/v1/sync")
EDGE_ANSWER=$(curl -fsS -D "$WORK/edge.headers" -H "Authorization: $EDGE_TOKEN" "$EDGE_URL$EDGE_PATH")
EDGE_ETAG=$(grep -i '^etag:' "$WORK/edge.headers" | cut -d' ' -f2- | tr -d '\r')
e304=$(status -H "Authorization: $EDGE_TOKEN" -H "If-None-Match: $EDGE_ETAG" "$EDGE_URL$EDGE_PATH")
say "entitle: 200 path answers $s200, 304 path answers $s304"
say "Edge: $EDGE_ANSWER"
say "Edge: ETag $EDGE_ETAG, 304 path answers $e304"
[[ $s200 == 200 && $s304 == 304 ]] || { say "entitle's answers are not 200 and 304"; exit 1; }
[[ $EDGE_ANSWER == *'"private_access"'* && $EDGE_ANSWER == *'"device_group"'* && $EDGE_ANSWER == *'"internet_access"'* ]] \
  || { say "Edge does not enable the three flags for the bench context"; exit 1; }
[[ $e304 == 304 ]] || { say "Edge's If-None-Match path does not answer 304"; exit 1; }

# --- alternating rounds ----------------------------------------------------
# One wrk run; prints requests per second, or fails if any answer was not 2xx/3xx.
run_wrk() {
  local out
  out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@")
  if grep -q 'Non-2xx or 3xx responses' <<<"$out"; then
    say "$out"
    say "wrk saw errors"
    exit 1
  fi
  awk '/^Requests\/sec:/ {print $2}' <<<"$out"
  awk '/^ +99%/ {print $2}' <<<"$out" >"$WORK/p99"
}
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
  for case in entitle_200 edge_200 entitle_304 edge_304; do
    case $case in
      entitle_200) rps=$(run_wrk -s "$HERE/sync-200.lua" "$ENTITLE_URL") ;;
      edge_200) rps=$(EDGE_ETAG="" run_wrk -s "$HERE/edge-frontend.lua" "$EDGE_URL") ;;
      entitle_304) rps=$(run_wrk -s "$HERE/sync-304.lua" "$ENTITLE_URL") ;;
      edge_304) rps=$(EDGE_ETAG="$EDGE_ETAG" run_wrk -s "$HERE/edge-frontend.lua" "$EDGE_URL") ;;
    esac
    RESULTS[$case]="${RESULTS[$case]:-} $rps"
    printf 'round %d  %-12s %10.0f req/s  (p99 %s)\n' "$round" "$case" "$rps" "$(cat "$WORK/p99")"
  done
done

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2}'; }
echo
echo "medians of $ROUNDS rounds (wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $DEVICES devices enrolled, SQLite):"
for case in entitle_200 edge_200 entitle_304 edge_304; do
  printf '  %-12s %10.0f req/s\n' "$case" "$(median "${RESULTS[$case]}")"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
r200=$(ratio "$(median "${RESULTS[entitle_200]}")" "$(median "${RESULTS[edge_200]}")")
r304=$(ratio "$(median "${RESULTS[entitle_304]}")" "$(median "${RESULTS[edge_304]}")")
echo "ratio entitle/Edge, 200 path: ${r200}x (target >= 2x)"
echo "ratio entitle/Edge, 304 path: ${r304}x (target >= 3x)"
