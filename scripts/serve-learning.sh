#!/usr/bin/env bash
# The experiment of docs/serving.md (Arms that learn): four arms on the default world,
# a frozen DQN, the same DQN learning from its feedback (served greedily), the same DQN
# learning while it explores (served with epsilon = 0.1), and a Thompson-sampling bandit
# learning from its own, each a quarter of the users; first the plan (what an
# experiment of this size detects, before it runs), then simulated users over HTTP for
# SECONDS (default 60); then the A/B report against the frozen DQN, with each arm's
# reward per session by the user's session index.
#
#   scripts/serve-learning.sh [SECONDS] [USERS]
#
# Trains configs/default.toml's DQN and a Thompson-sampling bandit on the same world
# into results/serve-learning/ first when they are not there (about a minute each).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
users=${2:-200}
out=results/serve-learning
bin=target/release/fypsim
if [[ ! -x $bin ]]; then
    echo "build first: scripts/dev.sh cli --version" >&2
    exit 1
fi
mkdir -p "$out"
if [[ ! -f $out/dqn/summary.json ]]; then
    echo "training the DQN of configs/default.toml into $out/dqn ..."
    rm -rf "$out/dqn"
    "$bin" run configs/default.toml --quiet --out "$out/dqn"
fi
if [[ ! -f $out/thompson/summary.json ]]; then
    echo "training a Thompson-sampling bandit on the same world into $out/thompson ..."
    rm -rf "$out/thompson"
    "$bin" run configs/default.toml --quiet --set policy=thompson --out "$out/thompson"
fi
rm -rf "$out/log" "$out/server.out"
"$bin" serve --arm "frozen=$out/dqn" --arm "learning=$out/dqn:learn" --arm "exploring=$out/dqn@epsilon=0.1:learn" \
    --arm "bandit=$out/thompson:learn" --salt learning --port 0 --log "$out/log" >"$out/server.out" 2>"$out/server.err" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 600); do
    url=$(grep -o 'http://[0-9.:]*' "$out/server.out" 2>/dev/null | head -1 || true)
    [[ -n $url ]] && break
    sleep 0.1
done
[[ -n $url ]] || { echo "the server did not start:" >&2; cat "$out/server.err" >&2; exit 1; }
# About 115 sessions per user in 60 s at 200 users on this machine.
"$bin" traffic --url "$url" --users "$users" --plan $((secs * 115 / 60 > 0 ? secs * 115 / 60 : 1)) --control frozen --json "$out/plan.json"
"$bin" traffic --url "$url" --users "$users" --duration "$secs" --concurrency 8 --seed 1 --json "$out/traffic.json"
curl -s "$url/health?state=digest" >"$out/health.json" || true
kill -TERM "$pid"
wait "$pid" || true
trap - EXIT
"$bin" report --ab-log "$out/log" --control frozen --by-session
echo "learning state at the end: $out/health.json"
