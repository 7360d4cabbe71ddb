"""Evaluating a Python policy beside the built-in baselines, as ``fypsim run`` does:
every policy plays the same episodes (episode ``k``: the same user and the same random
numbers for the responses), so paired differences are not noise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from fypsim import _config, _native
from fypsim.env import FypsimEnv


@dataclass
class Row:
    policy: str
    episodes: int
    mean_return: float
    ci95: float
    mean_steps: float
    #: The policy's return minus the reference's, paired episode by episode, and the
    #: half-width of its 95% interval (None for the reference itself).
    diff: Optional[float] = None
    diff_ci95: Optional[float] = None


@dataclass
class EvaluationTable:
    """The table ``fypsim run`` prints: each policy's mean return over the same episodes
    with its 95% interval (normal, across episodes), its mean steps, and its paired
    difference against the reference (greedy by default)."""

    rows: List[Row]
    episodes: int
    seed: int
    reference: str
    world: str
    #: Per policy, each episode's return (episode k at index k).
    returns: Dict[str, np.ndarray] = field(default_factory=dict)
    steps: Dict[str, np.ndarray] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [
            f"evaluation ({self.episodes} episodes each, seed {self.seed}, {self.world} world, "
            "exploration off, same users and random numbers):"
        ]
        lines.append(f"  {'policy':<16} {'mean return':>17} {'steps':>7}   {'- ' + self.reference + ' (paired)':>20}")
        for r in self.rows:
            diff = "" if r.diff is None else f"{r.diff:+.3f} ± {r.diff_ci95:.3f}"
            lines.append(f"  {r.policy:<16} {r.mean_return:>8.3f} ± {r.ci95:<6.3f} {r.mean_steps:>7.2f}   {diff:>20}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)

    def row(self, policy: str) -> Row:
        for r in self.rows:
            if r.policy == policy:
                return r
        raise KeyError(f"no row {policy!r} (rows: {', '.join(r.policy for r in self.rows)})")

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame([r.__dict__ for r in self.rows])


def _act(policy: Any) -> Callable[[Any], int]:
    """A callable ``obs -> action`` from a function or a model with ``predict`` (SB3)."""
    if hasattr(policy, "predict"):
        def act(obs):
            a, _ = policy.predict(obs, deterministic=True)
            return a
        return act
    if callable(policy):
        return policy
    raise TypeError("policy must be a callable obs -> action, or a model with predict(obs, deterministic=True)")


def evaluate(
    config: Any = "default",
    policy: Any = None,
    *,
    name: str = "policy",
    episodes: Optional[int] = None,
    seed: Optional[int] = None,
    baselines: Optional[Sequence[str]] = None,
    reference: str = "greedy",
    world: Optional[str] = None,
    overrides: _config.Overrides = None,
    flatten: bool = False,
    progress: bool = False,
) -> EvaluationTable:
    """Runs ``policy`` (a callable ``obs -> action``, or a model with
    ``predict(obs, deterministic=True)`` such as a Stable-Baselines3 model; None: the
    baselines alone) and the built-in baselines on episodes ``0 .. episodes-1`` and
    returns the table ``fypsim run`` prints.

    Defaults come from the config: ``episodes`` = ``train.eval_episodes``, ``seed`` = its
    seed, ``baselines`` = ``train.baselines`` (with the reference added; the bandits there
    learn, so they are left out: ``fypsim run`` trains them beside a run's policy),
    ``world`` = ``train.eval_world``. ``flatten`` gives the policy flat observations. The baselines
    play in Rust.
    """
    src = _config.source(config)
    ov = _config.overrides(overrides)
    probe = _native.Env(src, ov)
    spec = probe.spec()
    n = spec["eval_episodes"] if episodes is None else int(episodes)
    if n < 1:
        raise ValueError(f"episodes must be at least 1, not {n}")
    seed = spec["seed"] if seed is None else _config.seed(seed)
    world = spec["eval_world"] if world is None else world
    if world not in ("fresh", "evolving"):
        raise ValueError(f'invalid world "{world}" (allowed: "fresh", "evolving")')
    names = list(spec["baselines"] if baselines is None else baselines)
    if reference not in names and reference != name:
        names.append(reference)
    returns: Dict[str, np.ndarray] = {}
    steps: Dict[str, np.ndarray] = {}

    if policy is not None:
        act = _act(policy)
        env = FypsimEnv(src, overrides=ov, flatten=flatten)
        env.reset(seed=seed)
        rets, lens = np.zeros(n), np.zeros(n)
        for k in range(n):
            obs, _ = env.reset(options={"episode": k, "world": world})
            total, t = 0.0, 0
            while True:
                obs, r, term, trunc, _ = env.step(act(obs))
                total += r
                t += 1
                if term or trunc:
                    break
            rets[k], lens[k] = total, t
            if progress and (k + 1) % max(1, n // 10) == 0:
                print(f"{name}: {k + 1}/{n} episodes", flush=True)
        returns[name], steps[name] = rets, lens

    for b in names:
        # A seed restarts the environment (the generated world): every baseline starts
        # where the others did, on one environment.
        probe.reset(seed)
        played = probe.play_baseline(b, list(range(n)), world)
        returns[b] = np.array([p[0] for p in played])
        steps[b] = np.array([p[1] for p in played], dtype=float)
        if progress:
            print(f"{b}: {n} episodes", flush=True)

    rows = []
    for p, rets in returns.items():
        mean, ci = _native.interval(list(map(float, rets)))
        row = Row(p, n, mean, ci, float(np.mean(steps[p])))
        if p != reference and reference in returns:
            row.diff, row.diff_ci95 = _native.interval(list(map(float, rets - returns[reference])))
        rows.append(row)
    return EvaluationTable(rows, n, seed, reference, world, returns, steps)
