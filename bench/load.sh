#!/usr/bin/env bash
# Side-by-side loopback load: upstream direct vs nginx pass-through vs a bare
# hyper proxy (examples/bare_proxy.rs: the HTTP plumbing alone, no policy) vs
# Airlock (allow path, a policy reading the JSON body, audit on). Prints
# requests/s, p50, p99 per target and the Airlock/nginx ratios. Targets run in
# turn (A B C D A B C D ...) so that drift on a shared machine hits them alike.
#
#   bench/load.sh                       # 3 rounds x 10 s, 10 policies
#   ROUNDS=5 DURATION=15 POLICIES=10000 bench/load.sh
#   VARY=1 bench/load.sh                # a new amount per request: no
#                                       # decision is ever repeated
#   PIN=1 bench/load.sh                 # per core: each proxy alone on CPU 0,
#                                       # wrk and the upstream on CPU 1
#   SAMPLE=5 bench/load.sh              # a second Airlock with a 5% sampling
#                                       # rule (airlock+sN) beside the one
#                                       # without sampling, every round
#   EVENTS=1 bench/load.sh              # Airlock also runs with one live-view
#                                       # reader (GET /v1/events) that reads
#                                       # everything (airlock+ev), and with one
#                                       # that never reads (airlock+st), each
#                                       # beside Airlock with no reader
#
# Without PIN, wrk, the upstream and the proxy share every core, so a ratio
# also compares how much CPU each proxy leaves to wrk and the upstream. With
# PIN=1 each proxy gets one core of its own (nginx with one worker, the bare
# proxy with one thread, Airlock with AIRLOCK_WORKERS=1), and the ratio
# compares the proxies' work per request.
#
# Needs: wrk and nginx (Debian packages `wrk`, `nginx`), a release build;
# with PIN=1, taskset (util-linux) and at least 2 CPUs.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/allow_path.sh

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
POLICIES=${POLICIES:-10}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install nginx" >&2; exit 1; }

PIN=${PIN:-}
if [[ -n $PIN ]]; then
  command -v taskset >/dev/null || { echo "PIN=1 needs taskset: apt-get install util-linux" >&2; exit 1; }
  (( $(nproc) >= 2 )) || { echo "PIN=1 needs 2 CPUs, this process may use $(nproc)" >&2; exit 1; }
  # nginx takes its CPU from taskset, which its workers inherit; its own
  # `worker_cpu_affinity auto` would bind the worker to CPU 0 whatever
  # taskset says, so the configs below never set it.
  PROXY_THREADS=1
  NGINX_PROCESSES=1
  WRK_THREADS=1
  # Prefixes that run a command (and whatever it starts) on the proxies'
  # CPU, or on wrk's and the upstream's. Arrays rather than functions, so
  # that `$!` of a backgrounded server is the server itself.
  ON_PROXY_CPU=(taskset -c 0)
  ON_LOAD_CPU=(taskset -c 1)
else
  PROXY_THREADS=$(nproc)
  NGINX_PROCESSES=auto
  WRK_THREADS=2
  ON_PROXY_CPU=()
  ON_LOAD_CPU=()
fi

cargo build --release --quiet --bins --example bare_proxy ${FEATURES:+--features "$FEATURES"}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  local f
  for f in "$work"/nginx*.pid; do
    if [[ -f $f ]]; then kill "$(cat "$f")" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
# KEEP=1 leaves the servers running (their output goes to files, so a pipe
# reading this script still ends) and prints where they are.
[[ -n ${KEEP:-} ]] && trap - EXIT

UP=$(free_port); NG=$(free_port); AL=$(free_port); AD=$(free_port); BP=$(free_port)

# nginx: a static upstream and a plain pass-through proxy to it. One nginx
# serves both, except with PIN=1, where each is its own nginx on its own CPU.
nginx_conf() { # name processes servers...: writes $work/<name>.conf
  local name=$1 processes=$2; shift 2
  mkdir -p "$work/$name"
  {
    cat <<CONF
worker_processes $processes;
pid $work/$name.pid;
error_log $work/$name/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$name; proxy_temp_path $work/$name;
  fastcgi_temp_path $work/$name; uwsgi_temp_path $work/$name; scgi_temp_path $work/$name;
CONF
    printf '%s\n' "$@"
    echo "}"
  } > "$work/$name.conf"
}
upstream_server="  server {
    listen 127.0.0.1:$UP;
    location / { client_max_body_size 2m; default_type application/json; return 200 '{\"ok\":true}'; }
  }"
proxy_server="  upstream tool { server 127.0.0.1:$UP; keepalive 64; }
  server {
    listen 127.0.0.1:$NG;
    location / {
      proxy_pass http://tool;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
if [[ -n $PIN ]]; then
  nginx_conf nginx-upstream 1 "$upstream_server"
  nginx_conf nginx "$NGINX_PROCESSES" "$proxy_server"
  "${ON_LOAD_CPU[@]}" nginx -c "$work/nginx-upstream.conf"
  "${ON_PROXY_CPU[@]}" nginx -c "$work/nginx.conf"
else
  nginx_conf nginx "$NGINX_PROCESSES" "$upstream_server" "$proxy_server"
  nginx -c "$work/nginx.conf"
fi

# Airlock: one agent, one route, audit to a file.
write_allow_policies "$work/policies"
if (( POLICIES > 1 )); then
  python3 - "$work/policies/generated.cedar" "$POLICIES" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2]) - 1
with open(path, "w") as f:
    for i in range(n):
        f.write(f'permit(principal == Agent::"agent-{i}", action == Action::"POST", resource == Route::"route-{i}") when {{ context.path == "/r/{i}" }};\n')
PY
fi
write_airlock_config "$work/airlock.yaml" "$AL" "$AD" "$UP" "$work/audit.jsonl"
# Each server runs in its own session, as the nginx daemon does: the kernel's
# autogroup scheduling shares CPU between sessions, so a server left in this
# script's session would compete with wrk for one share while nginx had its
# own, which alone multiplies the proxy's p99.
AIRLOCK_WORKERS=$PROXY_THREADS "${ON_PROXY_CPU[@]}" setsid ./target/release/airlock serve --config "$work/airlock.yaml" >"$work/airlock.out" 2>"$work/airlock.err" &
pids+=($!)
AIRLOCK_PID=$!
# The bare proxy keeps one upstream connection per agent connection, as
# Airlock's lanes do (BARE_PAIRED=0 for hyper-util's pool instead), and uses
# the same allocator: it differs from Airlock by the policy layer alone.
BARE_PAIRED=${BARE_PAIRED:-1} BARE_THREADS=$PROXY_THREADS "${ON_PROXY_CPU[@]}" setsid ./target/release/examples/bare_proxy "127.0.0.1:$BP" "http://127.0.0.1:$UP" >/dev/null 2>&1 &
pids+=($!)
BARE_PID=$!
for _ in $(seq 100); do curl -sf "127.0.0.1:$AD/healthz" >/dev/null && break; sleep 0.1; done
kill -0 "$AIRLOCK_PID" 2>/dev/null || { echo "airlock did not start:" >&2; cat "$work/airlock.err" >&2; exit 1; }
# SAMPLE=N: the same Airlock with a sampling rule of N% (captures stored in
# its own in-memory store), measured in the same rounds.
SAMPLE=${SAMPLE:-}
if [[ -n $SAMPLE ]]; then
  ALS=$(free_port); ADS=$(free_port)
  mkdir -p "$work/sampled"
  cp -r "$work/policies" "$work/sampled/policies"
  write_airlock_config "$work/sampled/airlock.yaml" "$ALS" "$ADS" "$UP" "$work/sampled/audit.jsonl"
  printf 'sampling:\n  rules:\n    - rate: %s%%\n' "$SAMPLE" >> "$work/sampled/airlock.yaml"
  AIRLOCK_WORKERS=$PROXY_THREADS "${ON_PROXY_CPU[@]}" setsid ./target/release/airlock serve --config "$work/sampled/airlock.yaml" >"$work/sampled.out" 2>"$work/sampled.err" &
  pids+=($!)
  SAMPLED_PID=$!
  for _ in $(seq 100); do curl -sf "127.0.0.1:$ADS/healthz" >/dev/null && break; sleep 0.1; done
  kill -0 "$SAMPLED_PID" 2>/dev/null || { echo "the sampled airlock did not start:" >&2; cat "$work/sampled.err" >&2; exit 1; }
fi
# Live-view readers for EVENTS=1, started around one run each: one that
# takes every event as it comes, and one that sends its request and then
# never reads (its buffers fill, and Airlock must drop events for it alone).
start_reader() {
  "${ON_LOAD_CPU[@]}" curl -sN -H 'Authorization: Bearer bench' "127.0.0.1:$AD/v1/events" >/dev/null &
  READER=$!
}
start_staller() {
  "${ON_LOAD_CPU[@]}" python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench\r\nAccept: text/event-stream\r\n\r\n")
time.sleep(3600)
' "$AD" &
  READER=$!
}
stop_reader() { kill "$READER" 2>/dev/null || true; wait "$READER" 2>/dev/null || true; }

body=$(allow_body)
write_post_lua "$work/post.lua" "$body"
if [[ -n ${VARY:-} ]]; then
  # Every request carries another amount (what the policy reads), so
  # Airlock's decision memo almost never answers: the cost of a first
  # decision on every call. Same body size; every target gets the same load.
  cat >> "$work/post.lua" <<'LUA'
local note = string.rep("x", 950)
request = function()
  local body = string.format('{"customer_id":"c-1","amount":%6d,"note":"%s"}', math.random(1, 999999), note)
  return wrk.format(nil, nil, nil, body)
end
LUA
fi

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
idle_rss=$(rss_kb "$AIRLOCK_PID")

# Sanity: each target answers 200 before we measure it.
for url in "http://127.0.0.1:$UP/tool/x" "http://127.0.0.1:$NG/tool/x" "http://127.0.0.1:$BP/tool/x" "http://127.0.0.1:$AL/tool/x"; do
  code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST -H 'Authorization: Bearer bench-key' -H 'content-type: application/json' -d "$body" "$url")
  [[ $code == 200 ]] || { echo "$url answered $code" >&2; exit 1; }
done

to_ms() { awk -v v="$1" 'BEGIN { n=v+0; if (v ~ /us$/) n/=1000; else if (v ~ /ms$/) n=n; else if (v ~ /s$/) n*=1000; printf "%.3f", n }'; }
declare -A RPS P50 P99 USR SYS
peak_rss=0
TCK=$(getconf CLK_TCK)
# User and system CPU ticks of the processes given.
cpu_ticks() { local u=0 s=0 p; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
NGINX_WORKERS=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
# The upstream's workers: with PIN=1 another nginx, otherwise the same one.
UPSTREAM_WORKERS=$NGINX_WORKERS
[[ -n $PIN ]] && UPSTREAM_WORKERS=$(pgrep -P "$(cat "$work/nginx-upstream.pid")" | tr '\n' ' ')
run() { # name url [pids whose CPU per request to report]
  local out name=$1 url=$2; shift 2
  local before; before=$(cpu_ticks "$@")
  out=$("${ON_LOAD_CPU[@]}" wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$work/post.lua" "$url")
  local after; after=$(cpu_ticks "$@")
  local rps p50 p99 errs n cpu=""
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  [[ -z $errs ]] || echo "  warning: $name had $errs non-2xx responses" >&2
  RPS[$name]+="$rps "; P50[$name]+="$p50 "; P99[$name]+="$p99 "
  if (( $# > 0 )); then
    read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
    local us sy
    us=$(awk -v t=$((u1 - u0)) -v n="$n" -v k="$TCK" 'BEGIN { printf "%.1f", t * 1e6 / k / n }')
    sy=$(awk -v t=$((s1 - s0)) -v n="$n" -v k="$TCK" 'BEGIN { printf "%.1f", t * 1e6 / k / n }')
    USR[$name]+="$us "; SYS[$name]+="$sy "
    cpu="   cpu/request user $us us sys $sy us"
  fi
  printf '  %-10s %10s req/s   p50 %8s ms   p99 %8s ms%s\n' "$name" "$rps" "$p50" "$p99" "$cpu"
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "load: POST 1 KiB JSON, $CONNECTIONS connections, ${DURATION}s per run, $ROUNDS rounds, $POLICIES policies in Airlock, $([[ -n ${VARY:-} ]] && echo 'a new amount per request (VARY=1)' || echo 'the same body every request')"
[[ -z $PIN ]] || echo "pinned (PIN=1): each proxy alone on CPU 0 with one worker or thread; wrk and the upstream on CPU 1"
for r in $(seq "$ROUNDS"); do
  echo "round $r"
  # Without PIN, nginx serves the upstream too: its CPU in the direct run
  # is the upstream's alone, to subtract from its CPU as proxy and upstream.
  # shellcheck disable=SC2086
  run direct "http://127.0.0.1:$UP/tool/x" $UPSTREAM_WORKERS
  # shellcheck disable=SC2086
  run nginx "http://127.0.0.1:$NG/tool/x" $NGINX_WORKERS
  run bare "http://127.0.0.1:$BP/tool/x" "$BARE_PID"
  # Sample Airlock's memory mid-run from the background; wrk runs in the
  # foreground so its figures land in this shell's arrays.
  ( sleep $(( DURATION / 2 )); rss_kb "$AIRLOCK_PID" > "$work/rss.$r" ) &
  sampler=$!
  run airlock "http://127.0.0.1:$AL/tool/x" "$AIRLOCK_PID"
  # Only the sampler: a bare `wait` would wait for the servers too.
  wait "$sampler"
  if [[ -n $SAMPLE ]]; then
    run "airlock+s$SAMPLE" "http://127.0.0.1:$ALS/tool/x" "$SAMPLED_PID"
  fi
  if [[ -n ${EVENTS:-} ]]; then
    start_reader; sleep 0.2
    run airlock+ev "http://127.0.0.1:$AL/tool/x" "$AIRLOCK_PID"
    stop_reader
    start_staller; sleep 0.2
    run airlock+st "http://127.0.0.1:$AL/tool/x" "$AIRLOCK_PID"
    stop_reader
  fi
  r_now=$(cat "$work/rss.$r" 2>/dev/null || echo 0)
  (( r_now > peak_rss )) && peak_rss=$r_now
done

echo
echo "medians over $ROUNDS rounds:"
for t in direct nginx bare airlock; do
  printf '  %-8s %10s req/s   p50 %8s ms   p99 %8s ms\n' "$t" "$(median "${RPS[$t]}")" "$(median "${P50[$t]}")" "$(median "${P99[$t]}")"
done
a_rps=$(median "${RPS[airlock]}"); n_rps=$(median "${RPS[nginx]}")
a_p99=$(median "${P99[airlock]}"); n_p99=$(median "${P99[nginx]}")
awk -v a="$a_rps" -v n="$n_rps" 'BEGIN { printf "airlock/nginx throughput: %.2fx (target >= 0.90x)\n", a/n }'
awk -v a="$a_p99" -v n="$n_p99" 'BEGIN { printf "airlock/nginx p99:        %.2fx (target <= 1.50x)\n", a/n }'
b_rps=$(median "${RPS[bare]}")
awk -v b="$b_rps" -v n="$n_rps" 'BEGIN { printf "bare hyper/nginx:         %.2fx (the floor without policy)\n", b/n }'
# Round by round, each ratio compares runs seconds apart, so it drifts
# less than a ratio of medians.
per_round() { # a b: a's req/s over b's, one ratio per round
  paste -d' ' <(tr ' ' '\n' <<<"${RPS[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[$2]}" | grep -v '^$') |
    awk '{printf "%.3f ", $1 / $2}'
}
if [[ -n ${EVENTS:-} ]]; then
  for t in airlock+ev airlock+st; do
    printf '  %-10s %10s req/s   p50 %8s ms   p99 %8s ms\n' "$t" "$(median "${RPS[$t]}")" "$(median "${P50[$t]}")" "$(median "${P99[$t]}")"
  done
  echo "per round, median: with a reading live view / without $(median "$(per_round airlock+ev airlock)")x, with a stalled one / without $(median "$(per_round airlock+st airlock)")x"
  awk -v e="$(median "${P99[airlock+ev]}")" -v s="$(median "${P99[airlock+st]}")" -v a="$(median "${P99[airlock]}")" \
    'BEGIN { printf "p99 with a reading live view / without: %.2fx; with a stalled one / without: %.2fx\n", e/a, s/a }'
fi
echo "per round, median: airlock/nginx $(median "$(per_round airlock nginx)")x, airlock/bare $(median "$(per_round airlock bare)")x (what policy, audit and header care cost over forwarding alone)"
cpu() { # name: median user + sys µs per request
  awk -v u="$(median "${USR[$1]}")" -v s="$(median "${SYS[$1]}")" 'BEGIN { printf "%.1f us user + %.1f us sys", u, s }'
}
if [[ -n $PIN ]]; then
  nginx_proxy="$(cpu nginx) (its own nginx)"
else
  nginx_proxy=$(awk -v pu="$(median "${USR[nginx]}")" -v ps="$(median "${SYS[nginx]}")" \
    -v du="$(median "${USR[direct]}")" -v ds="$(median "${SYS[direct]}")" \
    'BEGIN { printf "~%.1f us user + %.1f us sys (its CPU minus the upstream'"'"'s)", pu - du, ps - ds }')
fi
echo "cpu per request (median): airlock $(cpu airlock); bare $(cpu bare); nginx as proxy $nginx_proxy"
if [[ -n $SAMPLE ]]; then
  t="airlock+s$SAMPLE"
  printf '  %-10s %10s req/s   p50 %8s ms   p99 %8s ms\n' "$t" "$(median "${RPS[$t]}")" "$(median "${P50[$t]}")" "$(median "${P99[$t]}")"
  echo "per round, median: sampling $SAMPLE% / no sampling $(median "$(per_round "$t" airlock)")x (target >= 0.95x); cpu/request with sampling $(cpu "$t")"
  echo "review items queued: $(curl -s "127.0.0.1:$ADS/metrics" | awk '/^airlock_reviews_sampled_total/ {print $2}'), $(curl -s "127.0.0.1:$ADS/metrics" | awk '/^airlock_reviews_dropped_total/ {print $2}') dropped"
fi
echo "airlock resident memory: idle $((idle_rss / 1024)) MiB, under load $((peak_rss / 1024)) MiB ($POLICIES policies)"
echo "audit records written: $(wc -l < "$work/audit.jsonl")"
if [[ -n ${KEEP:-} ]]; then
  echo "kept running: work dir $work; upstream :$UP nginx :$NG bare :$BP airlock :$AL (admin :$AD, pid $AIRLOCK_PID)"
fi
