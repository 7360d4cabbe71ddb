"""The Python package's speed: the single env and the native vector env against the Rust
loops they wrap, Gymnasium's SyncVectorEnv and RecSim's interest_evolution environment.

    scripts/dev.sh python benches/python_env.py [--presets default longterm] [--envs 64]
                                                 [--repeats 5] [--no-recsim]

Every figure is the median of --repeats timed runs (steps per second, random valid
actions); ratios are of medians. The Rust loops step the same environments with actions
drawn in Rust and observations written into Rust buffers; the Python loops draw actions
with numpy. RecSim runs in its own virtual environment (target/bench-recsim-venv, made
on first use: recsim 0.2.4 with gym 0.26; its runner module, which needs TensorFlow-1-era
dopamine, and gin.tf are stubbed, as the environment's own code does not use them).
Timings depend on the machine: say which one a figure came from.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

import fypsim
from fypsim import _native

ROOT = Path(__file__).resolve().parents[1]
RECSIM_VENV = ROOT / "target" / "bench-recsim-venv"

RECSIM_LOOP = r'''
import sys, time, types
import gin
sys.modules["gin.tf"] = gin
sys.modules["recsim.simulator.runner_lib"] = types.ModuleType("runner_lib")
import numpy as np
from recsim.environments import interest_evolution as ie
env = ie.create_environment({"num_candidates": 10, "slate_size": 1, "resample_documents": True, "seed": 0})
env.reset()
rng = np.random.default_rng(0)
steps = int(sys.argv[1])
t = time.perf_counter()
for _ in range(steps):
    obs, r, done, info = env.step([int(rng.integers(10))])
    if done:
        env.reset()
print(steps / (time.perf_counter() - t))
'''


def median_of(fn, repeats):
    return statistics.median(fn() for _ in range(repeats))


def python_single(preset, steps):
    env = fypsim.make(preset, seed=1)
    rng = np.random.default_rng(0)
    obs, _ = env.reset()
    t = time.perf_counter()
    for _ in range(steps):
        n = int(obs["action_mask"].sum())
        obs, r, te, tr, _ = env.step(int(rng.integers(n)))
        if te or tr:
            obs, _ = env.reset()
    return steps / (time.perf_counter() - t)


def python_vector(envs, steps):
    rng = np.random.default_rng(0)
    envs.reset(seed=1)
    n = envs.num_envs
    rounds = max(1, steps // n)
    t = time.perf_counter()
    for _ in range(rounds):
        valid = envs.action_masks().sum(axis=1)
        a = (rng.random(n) * np.maximum(valid, 1)).astype(np.int64)
        envs.step(a)
    return rounds * n / (time.perf_counter() - t)


def recsim(steps, repeats):
    py = RECSIM_VENV / "bin" / "python"
    if not py.exists():
        print("setting up RecSim for the comparison (once): target/bench-recsim-venv", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(RECSIM_VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run(pip + ["--no-deps", "recsim==0.2.4"], check=True)
        subprocess.run(pip + ["gym==0.26.2", "absl-py==2.3.1", "gin-config==0.5.0", "six", "scipy", "numpy<2"], check=True)
    runs = []
    for _ in range(repeats):
        out = subprocess.run([str(py), "-c", RECSIM_LOOP, str(steps)], capture_output=True, text=True, check=True)
        runs.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(runs)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["default", "longterm"])
    p.add_argument("--envs", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20_000, help="steps per timed run")
    p.add_argument("--no-recsim", action="store_true")
    a = p.parse_args()
    n, R, S = a.envs, a.repeats, a.steps
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"median of {R} runs of {S} steps; {n} envs; random valid actions")
    rows = []
    for preset in a.presets:
        rust1 = median_of(lambda: _native.rust_loop_steps_per_s(preset, 1, S, 1), R)
        rust_n = median_of(lambda: _native.rust_loop_steps_per_s(preset, n, S, 2), R)
        py1 = median_of(lambda: python_single(preset, S), R)
        native = fypsim.make_vec(preset, n, threads=2, copy=False)
        vec = median_of(lambda: python_vector(native, S), R)
        sync = gym.vector.SyncVectorEnv([lambda: fypsim.make(preset) for _ in range(n)], copy=False)
        sync.action_masks = lambda: np.stack(sync.call("action_masks"))
        syncs = median_of(lambda: python_vector(sync, S // 4), R)
        rows += [
            (preset, "Rust loop, 1 env", rust1, ""),
            (preset, "fypsim.make from Python, 1 env", py1, f"{py1 / rust1:.2f} of the Rust 1-env loop (target >= 0.50)"),
            (preset, f"Rust loop, {n} envs, 2 threads", rust_n, ""),
            (preset, f"fypsim.make_vec, {n} envs, 2 threads", vec,
             f"{vec / rust_n:.2f} of the Rust {n}-env loop (target >= 0.85); {vec / py1:.2f}x the Python 1-env loop (target >= 1.7)"),
            (preset, f"SyncVectorEnv over {n} fypsim.make", syncs, f"the native vector env is {vec / syncs:.1f}x faster"),
        ]
    if not a.no_recsim:
        try:
            rs = recsim(S // 2, R)
            py1 = next(r[2] for r in rows if r[1].startswith("fypsim.make from"))
            rows.append(("recsim", "RecSim interest_evolution, 1 env", rs,
                         f"fypsim.make ({a.presets[0]}) is {py1 / rs:.1f}x; fypsim.make_vec is "
                         f"{next(r[2] for r in rows if r[1].startswith('fypsim.make_vec')) / rs:.1f}x"))
        except (subprocess.CalledProcessError, OSError) as e:
            print(f"RecSim not measured: {e}", file=sys.stderr)
    w = max(len(r[1]) for r in rows)
    print(f"{'preset':<9} {'loop':<{w}} {'steps/s':>10}   ratio")
    for preset, what, sps, note in rows:
        print(f"{preset:<9} {what:<{w}} {sps:>10,.0f}   {note}")


if __name__ == "__main__":
    main()
