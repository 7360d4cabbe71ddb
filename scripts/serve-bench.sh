#!/usr/bin/env bash
# Benchmarks `fypsim serve` with `fypsim traffic` on this machine (docs/serving.md:
# Speed): for a trained DQN arm and a greedy arm, closed-loop throughput and latency at
# concurrency 1, 16 and 64, and open-loop latency at a fixed arrival rate; and the same
# DQN learning from its feedback (`:learn`, docs/serving.md: Arms that learn) at that
# rate, side by side with it frozen. Server and driver share the machine's cores, as
# they would on one box.
#
#   scripts/serve-bench.sh [SECONDS_PER_POINT] [OPEN_LOOP_RATE] [REPEATS] [open]
#
# With `open` as the fourth argument only the open-loop points run (frozen and learning
# DQN, and greedy).
#
# Every point runs REPEATS times (default 3), each on a fresh server (the live matrix
# grows with the traffic, and a user's longer history makes their candidates dearer, so
# each load starts from the same world); the table shows the median of every column over
# the repeats, as a shared machine is noisy. Trains configs/default.toml into
# results/serve-bench/run first when no agent is there (about a minute). Writes one JSON
# per point and repeat, and summary.md, into results/serve-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
rate=${2:-1000}
repeats=${3:-3}
only=${4:-all}
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

pid=""
trap '[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true' EXIT

serve() { # arm source, log dir -> sets pid and url
    # Removed first: the new server's redirection may not have truncated it yet when
    # the loop below first reads it.
    rm -rf "$2" "$out/server.out"
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

point() { # arm source, name, traffic arguments...
    local src=$1 name=$2
    shift 2
    for r in $(seq 1 "$repeats"); do
        serve "$src" "$out/log-$name"
        "$bin" traffic --url "$url" --users 200 --config configs/default.toml -q --json "$out/$name-r$r.json" "$@" >/dev/null
        kill -TERM "$pid"
        wait "$pid"
        pid=""
    done
}

rm -f "$out"/*-r[0-9]*.json
for arm in dqn dqn-learning greedy; do
    case $arm in
        dqn) src="$out/run" ;;
        dqn-learning) src="$out/run:learn" ;;
        greedy) src=greedy ;;
    esac
    if [[ $only != open && $arm != dqn-learning ]]; then
        for c in 1 16 64; do
            point "$src" "$arm-closed-$c" --duration "$secs" --concurrency "$c"
        done
    fi
    point "$src" "$arm-open-$rate" --duration "$((secs * 2))" --rate "$rate"
done

cat >"$out/summary.py" <<'PY'
import glob, json, statistics, sys
out, rate, repeats = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"Median over {repeats} repeats, each on a fresh server.\n")
print("| arm | load | recommendations/s | requests/s | p50 ms | p90 ms | p99 ms | max ms | feedback p99 ms | driver lag p99 ms | errors |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for arm in ["dqn", "dqn-learning", "greedy"]:
    for name in ["closed-1", "closed-16", "closed-64", f"open-{rate}"]:
        runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{arm}-{name}-r*.json"))]
        if not runs:
            continue
        med = lambda f: statistics.median(f(r) for r in runs)
        first = runs[0]
        load = f"open loop {first['rate']:.0f}/s" if first["mode"] == "open" else f"closed, concurrency {first['concurrency']}"
        lat = lambda k: med(lambda r: r["recommend_latency"][k])
        lag = f"{med(lambda r: r['dispatch_lag']['p99_ms']):.2f}" if first.get("dispatch_lag") else ""
        errors = sum(sum(r["errors"].values()) + r["dropped"] for r in runs)
        print(f"| {arm} | {load} | {med(lambda r: r['recommendations_per_s']):.0f} | {med(lambda r: r['requests_per_s']):.0f} | "
              f"{lat('p50_ms'):.2f} | {lat('p90_ms'):.2f} | {lat('p99_ms'):.2f} | {lat('max_ms'):.2f} | "
              f"{med(lambda r: r['feedback_latency']['p99_ms']):.2f} | {lag} | {errors} |")
PY
python3 "$out/summary.py" "$out" "$rate" "$repeats" >"$out/summary.md"
cat "$out/summary.md"
echo "figures: $out/*-r*.json, table: $out/summary.md"
