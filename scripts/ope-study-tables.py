#!/usr/bin/env python3
"""Markdown tables of an off-policy evaluation study (docs/ope.md: The study).

    python3 scripts/ope-study-tables.py results/ope-study/longterm

reads STUDY_DIR/study.csv and STUDY_DIR/truth.json (written by `fypsim ope-study`) and
prints, per logging policy, one table per target: each estimator's relative RMSE, bias
(in units of its standard error) and interval coverage at every log size; then how
precise each session truth is against the estimators' spread.
"""
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    folder = Path(sys.argv[1])
    rows = list(csv.DictReader((folder / "study.csv").open()))
    truths = {t["target"]: t for t in json.loads((folder / "truth.json").read_text())}
    cell = {(r["logging"], r["target"], int(r["sessions"]), r["estimator"]): r for r in rows}
    loggings = list(dict.fromkeys(r["logging"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    sizes = sorted({int(r["sessions"]) for r in rows})
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    logs = {int(r["sessions"]): int(r["logs"]) for r in rows}
    for logging in loggings:
        for target in targets:
            print(f"\n**Logging `{logging}`, target `{target}`** (relative RMSE; bias / its standard error; coverage of the 95% intervals)\n")
            head = "| estimator | " + " | ".join(f"{s:,} sessions × {logs[s]}" for s in sizes) + " |"
            print(head)
            print("|---|" + "---|" * len(sizes))
            for e in estimators:
                cells = []
                for s in sizes:
                    r = cell.get((logging, target, s, e))
                    if r is None:
                        cells.append("")
                        continue
                    se = float(r["bias_se"])
                    z = float(r["bias"]) / se if se > 0 else float("nan")
                    cells.append(f"{100 * float(r['relative_rmse']):.1f}%; {z:+.1f}; {100 * float(r['coverage']):.0f}%")
                estimand = "V" if cell[(logging, target, sizes[0], e)]["estimand"] == "session" else "V1"
                print(f"| {e} ({estimand}) | " + " | ".join(cells) + " |")
    print("\n**Session truths** (on-policy; the spread is the smallest standard deviation across logs of a session estimator at the largest size)\n")
    print("| target | V | its standard error | smallest spread | ratio |")
    print("|---|---|---|---|---|")
    largest = sizes[-1]
    for target in targets:
        t = truths[target]
        spreads = [float(cell[(l, target, largest, e)]["spread"]) for l in loggings for e in estimators
                   if (l, target, largest, e) in cell and cell[(l, target, largest, e)]["estimand"] == "session"]
        small = min(spreads)
        print(f"| `{target}` | {t['value']:.4f} | {t['se']:.4f} | {small:.4f} | {t['se'] / small:.2f} |")


if __name__ == "__main__":
    main()
