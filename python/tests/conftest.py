"""Shared fixtures: the fypsim binary (for the tests that compare with a CLI run) and
small configs."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fypsim_bin() -> str:
    """The CLI the README's test command builds (scripts/dev.sh test sets FYPSIM_BIN)."""
    b = os.environ.get("FYPSIM_BIN") or str(ROOT / "target" / "release" / "fypsim")
    if not Path(b).exists():
        if os.environ.get("FYPSIM_BIN") or os.environ.get("CI"):
            pytest.fail(f"the fypsim binary {b} is missing: run scripts/dev.sh test")
        pytest.skip("the fypsim binary is not built (scripts/dev.sh test builds it)")
    return b


def cli(bin_: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_, *args], capture_output=True, text=True, timeout=600)


# A small world with users with memory (so steps.parquet has its detail columns).
SMALL = {
    "world.n_videos": 300,
    "world.n_users": 40,
    "env.max_steps": 15,
    "dynamics.fatigue.rate": 0.01,
    "dynamics.drift.rate": 0.05,
}


def sets(overrides: dict) -> list:
    from fypsim._config import overrides as fmt

    out = []
    for a in fmt(overrides):
        out += ["--set", a]
    return out


@pytest.fixture(scope="session")
def greedy_run(fypsim_bin, tmp_path_factory) -> Path:
    """A CLI run of the greedy baseline on the smoke preset with steps.parquet."""
    out = tmp_path_factory.mktemp("run") / "greedy"
    over = dict(SMALL, **{"policy": "greedy", "output.steps": True, "train.episodes": 30, "train.eval_episodes": 40})
    r = cli(fypsim_bin, "run", str(ROOT / "configs" / "smoke.toml"), *sets(over), "--out", str(out), "-q")
    assert r.returncode == 0, r.stderr
    return out
