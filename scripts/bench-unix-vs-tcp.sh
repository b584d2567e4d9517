#!/bin/bash
# Usage: cargo build --release -p subzero -p subzero-benches --bin subzero --bin loadgen; scripts/bench-unix-vs-tcp.sh
# Server CPU per cache-hit authenticate: loopback TCP vs Unix socket, same server, same run.
set -e
B=${B:-$(dirname "$0")/../target/release}
D=$(mktemp -d)
$B/subzero serve --shards 1 --listen 127.0.0.1:18089 --listen unix:$D/sz.sock --data-dir $D/data > $D/log 2>&1 &
PID=$!
for i in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18089/healthz && break; sleep 0.1; done
TOK=$($B/subzero token issue --data-dir $D/data --sub alice --aud subzero --scope read | tail -1)
cpu() { awk '{print $14+$15}' /proc/$PID/stat; }
run() {
  local label=$1; shift
  local c0=$(cpu)
  local out=$($B/loadgen "$@" --addr 127.0.0.1:18089 --path /v1/authenticate --rate 20000 --connections 16 --duration-s 5 --header "Authorization: Bearer $TOK" | tail -1)
  local c1=$(cpu)
  local n=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["responses"])')
  local non2xx=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["non_2xx"])')
  echo "$label ticks=$((c1-c0)) responses=$n non_2xx=$non2xx us_cpu_per_req=$(python3 -c "print(($c1-$c0)*10000/$n)")"
}
run warmup
for r in 1 2; do run tcp; run unix --unix $D/sz.sock; done
kill $PID; wait $PID || true
