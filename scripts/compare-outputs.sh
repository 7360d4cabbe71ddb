#!/usr/bin/env bash
# Compares two folders written by scripts/shipped-outputs.sh file by file:
#   scripts/compare-outputs.sh BEFORE AFTER
# Every result file byte for byte, except timing.json and checkpoints (resume state with
# wall-clock times); in text files the output folder's path and the git revision are
# masked. Multi-seed reports carry a steps_per_second column (wall clock) that differs.
set -uo pipefail
B=$1; A=$2; bad=0; n=0
norm() { sed -e "s#$2#OUT#g" -e '/git_revision/d' "$1"; }
for d in $(ls "$B" | grep -v '\.log$\|index.txt'); do
  [ -d "$A/$d" ] || { echo "MISSING $d"; continue; }
  while IFS= read -r f; do
    rel=${f#$B/$d/}
    case $rel in timing.json|checkpoint/*|checkpoint-records/*|*/checkpoint/*|*/checkpoint-records/*|*/timing.json|.lock|*/.lock) continue;; esac
    n=$((n+1))
    case $rel in
      *.toml|*.json|*.md) cmp -s <(norm "$f" "$B") <(norm "$A/$d/$rel" "$A") || { echo "DIFF $d/$rel"; bad=$((bad+1)); } ;;
      *) cmp -s "$f" "$A/$d/$rel" || { echo "DIFF $d/$rel"; bad=$((bad+1)); } ;;
    esac
  done < <(find "$B/$d" -type f)
done
echo "compared $n files, $bad differ"
