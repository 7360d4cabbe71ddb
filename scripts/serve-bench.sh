#!/usr/bin/env bash
# Benchmarks `fypsim serve` with `fypsim traffic` on this machine (docs/serving.md:
# Speed): for a trained DQN arm and a greedy arm, closed-loop throughput and latency at
# concurrency 1, 16 and 64, and open-loop latency at a fixed arrival rate. Server and
# driver share the machine's cores, as they would on one box.
#
#   scripts/serve-bench.sh [SECONDS_PER_POINT] [OPEN_LOOP_RATE]
#
# Trains configs/default.toml into results/serve-bench/run first when no agent is there
# (about a minute). Writes one JSON per point and summary.md into results/serve-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rate=${2:-1000}
out=results/serve-bench
bin=target/release/fypsim
mkdir -p "$out"
if [[ ! -x $bin ]]; then
    echo "build first: scripts/dev.sh cli --version" >&2
    exit 1
fi
if [[ ! -f $out/run/summary.json ]]; then
    echo "training the DQN of configs/default.toml into $out/run ..."
    rm -rf "$out/run"
    "$bin" run configs/default.toml --quiet --out "$out/run"
fi

serve() { # arm source, log dir -> sets pid and url
    rm -rf "$2"
    "$bin" serve --arm "A=$1" --port 0 --log "$2" >"$out/server.out" 2>"$out/server.err" &
    pid=$!
    for _ in $(seq 1 600); do
        url=$(grep -o 'http://[0-9.:]*' "$out/server.out" 2>/dev/null | head -1 || true)
        [[ -n $url ]] && return 0
        sleep 0.1
    done
    echo "the server did not start:" >&2
    cat "$out/server.err" >&2
    exit 1
}

echo "| arm | load | recommendations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | driver lag p99 ms | errors |" >"$out/summary.md"
echo "|---|---|---|---|---|---|---|---|---|---|" >>"$out/summary.md"
# Every point on a fresh server: the live matrix grows with the traffic (a user's longer
# history makes their candidates dearer), so each load starts from the same world.
point() { # arm source, name, traffic arguments...
    local src=$1 name=$2
    shift 2
    serve "$src" "$out/log-$name"
    "$bin" traffic --url "$url" --users 200 --config configs/default.toml -q --json "$out/$name.json" "$@" >/dev/null
    kill -TERM "$pid"
    wait "$pid"
}
for arm in dqn greedy; do
    src=$([[ $arm == dqn ]] && echo "$out/run" || echo greedy)
    for c in 1 16 64; do
        point "$src" "$arm-closed-$c" --duration "$secs" --concurrency "$c"
    done
    point "$src" "$arm-open-$rate" --duration "$((secs * 2))" --rate "$rate"
    for f in "$out/$arm-closed-1.json" "$out/$arm-closed-16.json" "$out/$arm-closed-64.json" "$out/$arm-open-$rate.json"; do
        python3 - "$f" "$arm" >>"$out/summary.md" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["recommend_latency"]
load = f"open loop {r['rate']:.0f}/s" if r["mode"] == "open" else f"closed, concurrency {r['concurrency']}"
errors = sum(r["errors"].values()) + r["dropped"]
lag = f"{r['dispatch_lag']['p99_ms']:.2f}" if r.get("dispatch_lag") else ""
print(f"| {sys.argv[2]} | {load} | {r['recommendations_per_s']:.0f} | {r['requests_per_s']:.0f} | "
      f"{l['p50_ms']:.2f} | {l['p90_ms']:.2f} | {l['p99_ms']:.2f} | {l['max_ms']:.2f} | {lag} | {errors} |")
EOF
    done
done
cat "$out/summary.md"
echo "figures: $out/*.json, table: $out/summary.md"
