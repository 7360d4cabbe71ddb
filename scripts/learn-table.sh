#!/usr/bin/env bash
# The table of docs/learn.md and the README: every cell x mode of `fypsim learn` on the
# logs of each preset. Makes the three runs it needs (when they are not there yet), trains
# each model, and prints one markdown row per model from its metrics.json and timing.json.
#
#   scripts/learn-table.sh [RESULTS_DIR]     (default: results/learn-table; about 15 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/learn-table}"
scripts/dev.sh cli --version >/dev/null
bin=target/release/fypsim

# The logs: instatok (the default config, its step log with the detail columns), users
# with memory (configs/longterm.toml's DQN on 10,000 episodes; only the myopic oracle
# beside it, whose planner-free evaluation is quick), and 13 weeks of configs/churn.toml.
[ -f "$out/instatok/summary.json" ] || $bin run configs/default.toml --quiet --out "$out/instatok" \
    --set output.step_detail=true >&2
[ -f "$out/longterm/summary.json" ] || $bin run configs/longterm.toml --quiet --out "$out/longterm" \
    --set train.episodes=10000 --set train.eval_every=0 --set 'train.baselines=["myopic_oracle"]' >&2
[ -f "$out/churn/summary.json" ] || $bin run configs/churn.toml --quiet --out "$out/churn" >&2

for preset in instatok longterm; do
    for cell in rnn lstm gru; do
        for mode in many-to-many many-to-one; do
            $bin learn next-action "$out/$preset" --quiet --cell "$cell" --mode "$mode" >/dev/null
        done
    done
done
for cell in rnn lstm gru; do
    for mode in many-to-many many-to-one; do
        $bin learn churn "$out/churn" --quiet --cell "$cell" --mode "$mode" >/dev/null
    done
done

python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
def est(e, pct=False):
    k = 100 if pct else 1
    return f"{k*e['value']:.{1 if pct else 3}f} [{k*e['ci95'][0]:.{1 if pct else 3}f}, {k*e['ci95'][1]:.{1 if pct else 3}f}]"
print("| task | preset | cell | mode | model | baseline | Bayes / gap | train s |")
print("|---|---|---|---|---|---|---|---|")
for preset in ["instatok", "longterm"]:
    for cell in ["rnn", "lstm", "gru"]:
        for mode in ["many-to-many", "many-to-one"]:
            d = out / preset / "learn" / f"next-action-{cell}-{mode}"
            m = json.loads((d / "metrics.json").read_text()); t = json.loads((d / "timing.json").read_text())
            print(f"| next action (log-loss) | {preset} | {cell} | {mode} | {est(m['model']['log_loss'])} "
                  f"| Markov {est(m['baselines']['markov']['log_loss'])} | Bayes {m['bayes']['log_loss']['value']:.3f}; "
                  f"gap closed {est(m['markov_to_bayes_gap_closed'], True)}% | {t['train_s']:.1f} |")
for cell in ["rnn", "lstm", "gru"]:
    for mode in ["many-to-many", "many-to-one"]:
        d = out / "churn" / "learn" / f"churn-{cell}-{mode}"
        m = json.loads((d / "metrics.json").read_text()); t = json.loads((d / "timing.json").read_text())
        print(f"| churn (ROC-AUC) | churn | {cell} | {mode} | {est(m['model']['roc_auc'])} "
              f"| logistic regression {est(m['baselines']['logistic_regression']['roc_auc'])} "
              f"| difference {est(m['roc_auc_minus_logistic_regression'])} | {t['train_s']:.1f} |")
PY
