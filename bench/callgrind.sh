#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the measure for a
# change on the request path, since instruction counts repeat run to run
# where timings drift. Runs the allow path of bench/load.sh (one agent, a
# policy reading the JSON body, audit on) with one data-plane worker under
# callgrind, zeroes the counters after a warm-up, drives a bounded load
# with wrk, and divides the instructions by the requests served.
#
#   bench/callgrind.sh                   # this tree
#   BASE=<git rev> bench/callgrind.sh    # that revision and this tree,
#                                        # side by side, and their ratio
#   DURATION=20 CONNECTIONS=10 bench/callgrind.sh
#   KEEP=1 bench/callgrind.sh            # keep the dumps for callgrind_annotate
#
# Needs: valgrind, wrk and nginx (Debian packages); builds release binaries
# (the base in its own worktree and target directory under target/).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/allow_path.sh

DURATION=${DURATION:-20}
CONNECTIONS=${CONNECTIONS:-10}
for tool in valgrind callgrind_control wrk nginx; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: apt-get install valgrind wrk nginx" >&2; exit 1; }
done

echo "== building this tree (release)"
cargo build --release --quiet --bin airlock
bins=("this:$PWD/target/release/airlock")
if [[ -n ${BASE:-} ]]; then
  base_dir=$PWD/target/callgrind-base
  rev=$(git rev-parse --short "$BASE")
  if [[ ! -d $base_dir/src ]]; then
    git worktree add --detach "$base_dir/src" "$BASE" >/dev/null
  else
    git -C "$base_dir/src" checkout --quiet --detach "$BASE"
  fi
  echo "== building $rev (release, in $base_dir)"
  (cd "$base_dir/src" && CARGO_TARGET_DIR=$base_dir/target cargo build --release --quiet --bin airlock)
  bins=("base-$rev:$base_dir/target/release/airlock" "${bins[@]}")
fi

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [[ -f $work/nginx.pid ]]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if [[ -n ${KEEP:-} ]]; then echo "kept the dumps in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

UP=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx; uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:$UP;
    location / { client_max_body_size 2m; default_type application/json; return 200 '{"ok":true}'; }
  }
}
CONF
nginx -c "$work/nginx.conf"

write_allow_policies "$work/policies"
body=$(allow_body)
write_post_lua "$work/post.lua" "$body"

declare -A PER_REQUEST
for entry in "${bins[@]}"; do
  name=${entry%%:*}; bin=${entry#*:}
  AL=$(free_port); AD=$(free_port)
  write_airlock_config "$work/airlock.yaml" "$AL" "$AD" "$UP" "$work/audit-$name.jsonl"
  out=$work/callgrind.$name
  echo "== $name: starting under callgrind"
  AIRLOCK_WORKERS=1 setsid valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" serve --config "$work/airlock.yaml" >"$work/$name.out" 2>"$work/$name.err" &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 600); do curl -sf "127.0.0.1:$AD/healthz" >/dev/null && break; sleep 0.1; done
  curl -sf "127.0.0.1:$AD/healthz" >/dev/null || { echo "$name did not start:" >&2; cat "$work/$name.err" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Authorization: Bearer bench-key' -H 'content-type: application/json' -d "$body" "127.0.0.1:$AL/tool/x")
  [[ $code == 200 ]] || { echo "$name answered $code" >&2; exit 1; }
  echo "== $name: warm-up (3 s), then counters zeroed"
  wrk -t1 -c"$CONNECTIONS" -d3s -s "$work/post.lua" "http://127.0.0.1:$AL/tool/x" >/dev/null
  callgrind_control --zero "$pid" >/dev/null 2>&1
  echo "== $name: load for ${DURATION}s, $CONNECTIONS connections"
  served=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$work/post.lua" "http://127.0.0.1:$AL/tool/x" \
    | awk '/requests in/ {print $1}')
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  # The first dump (`.1`), taken right after the load, holds only the
  # load's counts: the start-up and warm-up were zeroed, and the shutdown
  # goes to the final file.
  dump=$out.1
  [[ -f $dump ]] || { echo "$name: callgrind wrote no dump" >&2; exit 1; }
  total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
  PER_REQUEST[$name]=$(awk -v t="$total" -v n="$served" 'BEGIN { printf "%.0f", t / n }')
  printf '%s: %s requests, %s instructions, %s per request\n' "$name" "$served" "$total" "${PER_REQUEST[$name]}"
done

if [[ -n ${BASE:-} ]]; then
  base_name=${bins[0]%%:*}
  awk -v a="${PER_REQUEST[$base_name]}" -v b="${PER_REQUEST[this]}" -v n="$base_name" \
    'BEGIN { printf "this / %s: %.3f\n", n, b / a }'
fi
