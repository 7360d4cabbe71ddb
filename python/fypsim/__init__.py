"""fypsim: a reinforcement-learning recommendation simulator for short-video feeds, as a
Gymnasium environment.

    import fypsim
    env = fypsim.make("longterm", seed=1)            # or gymnasium.make("fypsim/Longterm-v0")
    envs = fypsim.make_vec("longterm", num_envs=64)  # one native batch, stepped in Rust
    table = fypsim.evaluate("longterm", my_policy)   # beside the built-in baselines

The simulation runs in Rust (``fypsim._native``), without libtorch.
"""

from fypsim import _native
from fypsim.env import FypsimEnv, make
from fypsim.evaluation import EvaluationTable, evaluate
from fypsim.logs import Run, StepLog, read_run
from fypsim.registration import ENV_IDS, register_envs
from fypsim.vector import FypsimVectorEnv, make_vec

__version__ = "0.1.0"

#: The shipped presets a config name may give.
PRESETS = tuple(name for name, _ in _native.presets())


def load_config(config="default", overrides=None) -> dict:
    """A config (a preset's name or a TOML path, with overrides) resolved, every key
    included, as a dict."""
    import json

    from fypsim import _config

    return json.loads(_native.config_json(_config.source(config), _config.overrides(overrides)))


def make_sb3_vec_env(*args, **kwargs):
    """A Stable-Baselines3 ``VecEnv`` over the native batch (see ``fypsim.sb3``)."""
    from fypsim.sb3 import FypsimSB3VecEnv

    return FypsimSB3VecEnv(*args, **kwargs)


register_envs()

__all__ = [
    "ENV_IDS",
    "PRESETS",
    "EvaluationTable",
    "FypsimEnv",
    "FypsimVectorEnv",
    "Run",
    "StepLog",
    "evaluate",
    "load_config",
    "make",
    "make_sb3_vec_env",
    "make_vec",
    "read_run",
    "register_envs",
]
