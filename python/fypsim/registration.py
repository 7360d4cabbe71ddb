"""Gymnasium ids for the episodic presets (not the calendar, churn or 1M-user configs)."""

from __future__ import annotations

import gymnasium as gym

#: Gymnasium id -> shipped preset.
ENV_IDS = {
    "fypsim/Instatok-v0": "default",
    "fypsim/Longterm-v0": "longterm",
    "fypsim/Prototype-v0": "prototype",
    "fypsim/Smoke-v0": "smoke",
}


def register_envs() -> None:
    """Registers every id (once): ``gymnasium.make("fypsim/Longterm-v0")`` and, through
    the native vector env, ``gymnasium.make_vec("fypsim/Longterm-v0", num_envs=64)``."""
    for env_id, preset in ENV_IDS.items():
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point="fypsim.env:FypsimEnv",
            vector_entry_point="fypsim.vector:FypsimVectorEnv",
            kwargs={"config": preset},
        )
