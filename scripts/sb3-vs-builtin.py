"""The comparison users ask for first: Stable-Baselines3's PPO and DQN, trained through
fypsim's vector env on the longterm preset with the same features as the built-in DQN,
at the built-in DQN's step budget and at 10x that budget, against the built-in DQN, the
myopic oracle and the planner on the same fresh evaluation episodes.

    scripts/dev.sh python scripts/sb3-vs-builtin.py [--seeds 1 2 3] [--multipliers 1 10]
                                                    [--eval-episodes 1000] [--jobs 2]

Phases (each result is saved as it is made; a second call reuses them):
 1. builtin: `fypsim run configs/longterm-evidence.toml` for the reported seeds: the
    built-in DQN and the baselines, each evaluated on episodes 0..999 of each seed
    (eval_episodes.csv), and the DQN's training steps (the 1x budget: summary.json).
 2. tune: every setting of each algorithm's grid (the declared tuning budget: 4 settings
    x 1 seed x the 1x budget), trained on the tuning seed (101, disjoint from the
    reported ones) and evaluated on 300 of its episodes; the best mean is kept.
 3. runs: each algorithm with its best setting, for every reported seed and budget,
    evaluated on the same 1,000 episodes as the built-in run of that seed.
 4. the table: means across seeds with 95% t intervals, and per-seed paired differences
    (against the built-in DQN and the myopic oracle, over the same episodes) across seeds.

Written to results/sb3-vs-builtin/ (table.md and one JSON per run). Figures depend on the
machine's libtorch rounding: say which machine a table came from.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "longterm"

GRID = {
    "ppo": [
        {"learning_rate": 3e-4, "n_steps": 128},
        {"learning_rate": 3e-4, "n_steps": 512},
        {"learning_rate": 1e-3, "n_steps": 128},
        {"learning_rate": 1e-3, "n_steps": 512},
    ],
    "dqn": [
        {"learning_rate": 1e-4, "exploration_fraction": 0.1},
        {"learning_rate": 1e-4, "exploration_fraction": 0.3},
        {"learning_rate": 5e-4, "exploration_fraction": 0.1},
        {"learning_rate": 5e-4, "exploration_fraction": 0.3},
    ],
}
GAMMA = 0.95  # the built-in DQN's (dqn.gamma in configs/longterm.toml)


def train_and_evaluate(job: dict) -> dict:
    """One training run and its evaluation (in a worker process)."""
    out = Path(job["out"])
    if out.exists():
        return json.loads(out.read_text())
    import torch
    from stable_baselines3 import DQN, PPO

    import fypsim

    torch.set_num_threads(1)
    started = time.time()
    s = job["seed"]
    if job["algo"] == "ppo":
        env = fypsim.make_sb3_vec_env(CONFIG, 8, seed=s * 1000, threads=1)
        model = PPO("MultiInputPolicy", env, gamma=GAMMA, batch_size=256, seed=s, device="cpu", **job["params"])
    else:
        env = fypsim.make_sb3_vec_env(CONFIG, 4, seed=s * 1000, threads=1)
        model = DQN("MultiInputPolicy", env, gamma=GAMMA, buffer_size=50_000, learning_starts=1_000, batch_size=64,
                    train_freq=4, target_update_interval=1_000, seed=s, device="cpu", **job["params"])
    model.learn(job["steps"])
    trained = time.time() - started
    t = fypsim.evaluate(CONFIG, model, name=job["algo"], seed=job["eval_seed"], episodes=job["episodes"],
                        baselines=[], reference=job["algo"], world="fresh")
    result = dict(job, returns=t.returns[job["algo"]].tolist(), mean_return=t.rows[0].mean_return,
                  train_s=trained, total_s=time.time() - started)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)
    print(f"{out.name}: mean return {result['mean_return']:.3f} ({trained:.0f} s training)", flush=True)
    return result


def builtin(out: Path, seeds, fypsim_bin: str):
    """Per seed: the built-in run's evaluation returns by policy, and its training steps."""
    d = out / "builtin"
    if not all((d / f"seed{s}" / "summary.json").exists() for s in seeds):
        cmd = [fypsim_bin, "run", str(ROOT / "configs" / "longterm-evidence.toml"),
               "--set", f"train.seeds=[{','.join(map(str, seeds))}]", "--out", str(d), "-q"]
        print("phase 1: " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    res = {}
    for s in seeds:
        rows = {}
        with open(d / f"seed{s}" / "eval_episodes.csv") as f:
            for r in csv.DictReader(f):
                rows.setdefault(r["policy"].replace(" (trained)", ""), []).append(float(r["return"]))
        summary = json.loads((d / f"seed{s}" / "summary.json").read_text())
        res[s] = {"returns": {k: np.array(v) for k, v in rows.items()}, "steps": summary["total_steps"]}
    return res


def interval(xs, t=True):
    from fypsim import _native

    return _native.interval([float(x) for x in xs], t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--tune-seed", type=int, default=101)
    p.add_argument("--multipliers", type=int, nargs="+", default=[1, 10])
    p.add_argument("--eval-episodes", type=int, default=1000)
    p.add_argument("--tune-episodes", type=int, default=300)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "results" / "sb3-vs-builtin"))
    p.add_argument("--fypsim", default=os.environ.get("FYPSIM_BIN", str(ROOT / "target" / "release" / "fypsim")))
    a = p.parse_args()
    if a.tune_seed in a.seeds:
        sys.exit("--tune-seed must differ from the reported seeds")
    out = Path(a.out)
    base = builtin(out, a.seeds, a.fypsim)
    budget = int(round(np.mean([base[s]["steps"] for s in a.seeds])))
    print(f"the built-in DQN's step budget: {budget:,} steps (mean over seeds {a.seeds})", flush=True)

    with ProcessPoolExecutor(a.jobs) as pool:
        tune = [dict(algo=algo, params=params, seed=a.tune_seed, eval_seed=a.tune_seed, steps=budget,
                     episodes=a.tune_episodes, out=str(out / "tune" / f"{algo}-{k}.json"))
                for algo in GRID for k, params in enumerate(GRID[algo])]
        tuned = list(pool.map(train_and_evaluate, tune))
        best = {algo: max((r for r in tuned if r["algo"] == algo), key=lambda r: r["mean_return"])["params"]
                for algo in GRID}
        print(f"phase 2, tuned on seed {a.tune_seed} ({a.tune_episodes} episodes): {best}", flush=True)
        runs = [dict(algo=algo, params=best[algo], seed=s, eval_seed=s, steps=budget * m, multiplier=m,
                     episodes=a.eval_episodes, out=str(out / "runs" / f"{algo}-x{m}-seed{s}.json"))
                for m in a.multipliers for algo in GRID for s in a.seeds]
        done = list(pool.map(train_and_evaluate, runs))

    lines = [f"# SB3 against the built-in DQN on the longterm preset",
             "",
             f"Seeds {a.seeds}, {a.eval_episodes} fresh evaluation episodes per seed and policy (the same "
             f"episodes for every policy); means across seeds with 95% t intervals. Budget 1x = "
             f"{budget:,} training steps (the built-in DQN's). Tuned on seed {a.tune_seed}: {best}.",
             "",
             "| policy | return per session | − built-in DQN (paired) | − myopic oracle (paired) | training s |",
             "|---|---|---|---|---|"]

    def row(name, per_seed, train_s=None):
        means = [np.mean(per_seed[s]) for s in a.seeds]
        vs_dqn = [np.mean(per_seed[s] - base[s]["returns"]["dqn"]) for s in a.seeds]
        vs_mo = [np.mean(per_seed[s] - base[s]["returns"]["myopic_oracle"]) for s in a.seeds]
        m, c = interval(means)
        d1, c1 = interval(vs_dqn)
        d2, c2 = interval(vs_mo)
        ts = "" if train_s is None else f"{np.mean(train_s):.0f}"
        lines.append(f"| {name} | {m:.3f} ± {c:.3f} | {d1:+.3f} ± {c1:.3f} | {d2:+.3f} ± {c2:.3f} | {ts} |")

    for name in ["planner", "dqn", "myopic_oracle", "greedy", "random"]:
        if all(name in base[s]["returns"] for s in a.seeds):
            row(name if name != "dqn" else "built-in DQN", {s: base[s]["returns"][name] for s in a.seeds})
    for m in a.multipliers:
        for algo in GRID:
            rs = [r for r in done if r["algo"] == algo and r["multiplier"] == m]
            row(f"SB3 {algo.upper()} ({m}x)", {r["seed"]: np.array(r["returns"]) for r in rs}, [r["train_s"] for r in rs])
    text = "\n".join(lines)
    print(text)
    (out / "table.md").write_text(text + "\n")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
