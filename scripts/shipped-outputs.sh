#!/usr/bin/env bash
# Runs every shipped config (configs/*.toml but scale-1m, the benchmark config) with one
# fypsim binary into OUTDIR, for checking that a change moves no result:
#   scripts/shipped-outputs.sh BIN OUTDIR
# Episodes are capped at 2,000, evaluation episodes at 200, multi-seed runs at seeds
# [1, 2] and calendars at 7 days; smoke and default run in full. Run it from a checkout
# whose configs the binary belongs to, once with the old binary and once with the new
# one, then compare with scripts/compare-outputs.sh.
set -uo pipefail
BIN=$1; OUT=$2; mkdir -p "$OUT"
for c in configs/*.toml; do
  n=$(basename "$c" .toml)
  [ "$n" = scale-1m ] && continue
  sets=()
  if [ "$n" != smoke ] && [ "$n" != default ]; then
    r=$("$BIN" check "$c" --print 2>/dev/null)
    ep=$(echo "$r" | grep -m1 '^episodes = ' | awk '{print $3}')
    ev=$(echo "$r" | grep -m1 '^eval_episodes = ' | awk '{print $3}')
    [ -n "$ep" ] && [ "$ep" -gt 2000 ] && sets+=(--set train.episodes=2000)
    [ -n "$ev" ] && [ "$ev" -gt 200 ] && sets+=(--set train.eval_episodes=200)
    echo "$r" | grep -q '^seeds = \[$' && sets+=(--set 'train.seeds=[1,2]')
    d=$(echo "$r" | grep -m1 '^days = ' | awk '{print $3}')
    [ -n "$d" ] && [ "$d" -gt 7 ] && sets+=(--set calendar.days=7)
  fi
  start=$(date +%s)
  "$BIN" run "$c" --out "$OUT/$n" --quiet "${sets[@]}" > "$OUT/$n.log" 2>&1
  echo "$n rc=$? $(( $(date +%s) - start ))s ${sets[*]}" | tee -a "$OUT/index.txt"
done
