"""``FypsimVectorEnv``: N environments stepped by one call into Rust, in parallel on the
machine's cores with the GIL released, writing into preallocated numpy arrays."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from fypsim import _config, _native
from fypsim.spaces import action_space, observation_space


def actions_array(actions: Any, n: int) -> np.ndarray:
    """One integer slot per environment, as a contiguous int64 array; a wrong shape is a
    ValueError and a non-integer dtype a TypeError."""
    a = np.asarray(actions)
    if a.shape != (n,):
        raise ValueError(f"actions must have shape ({n},): one slot per environment; got shape {a.shape}")
    if a.dtype.kind not in "iu":
        raise TypeError(f"actions must be integers (slots); got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


class _Native:
    """The native batch and numpy views of its buffers, shaped as the spaces."""

    def __init__(self, config, num_envs, overrides, flatten, invalid_action, autoreset, threads):
        if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)):
            raise TypeError(f"num_envs must be an integer, not {type(num_envs).__name__}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, not {num_envs}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None (every core), not {threads!r}")
        self.native = _native.VecEnv(
            _config.source(config),
            int(num_envs),
            _config.overrides(overrides),
            bool(flatten),
            invalid_action,
            autoreset,
            threads,
        )
        self.spec = self.native.spec()
        self.flatten = bool(flatten)
        n = int(num_envs)
        b = self.native.buffers()
        for arr in b.values():
            # Only the native batch writes these (each call overwrites them).
            arr.flags.writeable = False
        r = self.spec["slots"]
        ps = len(self.spec["candidate_features"])
        hs, hf = self.spec["history_shape"]

        def dict_view(prefix: str) -> dict:
            d = {
                "action_mask": b[prefix + "action_mask"],
                "candidates": b[prefix + "candidates"].reshape(n, r, ps),
                "categorical": b[prefix + "categorical"],
                "user": b[prefix + "user"],
            }
            if hs > 0:
                d["history"] = b[prefix + "history"].reshape(n, hs, hf)
            return d

        if self.flatten:
            self.obs = b["flat"]
            self.final = b["final_flat"]
        else:
            self.obs = dict_view("")
            self.final = dict_view("final_") if autoreset == "same_step" else None
        self.mask = b["action_mask"]
        self.rewards = b["rewards"]
        self.terminated = b["terminated"]
        self.truncated = b["truncated"]
        self.replaced = b["action_replaced"]
        self.ended = b["ended"]

    def observations(self, copy: bool):
        if self.flatten:
            return self.obs.copy() if copy else self.obs
        return {k: (v.copy() if copy else v) for k, v in self.obs.items()}

    def masks(self) -> np.ndarray:
        if self.flatten:
            return self.obs[:, : self.spec["slots"]].astype(bool)
        return self.mask.astype(bool)


class FypsimVectorEnv(VectorEnv):
    """``num_envs`` fypsim environments, each with its own state, equal step for step to
    ``gymnasium.vector.SyncVectorEnv`` over as many ``FypsimEnv`` (same config, seeds
    ``seed + i``). Autoreset is Gymnasium's next-step mode (``metadata["autoreset_mode"]``):
    the step after an episode ends resets that environment, ignores its action and returns
    reward 0.

    Args: as :class:`fypsim.FypsimEnv`, plus ``num_envs``, ``threads`` (the Rust threads
    that step the batch; default: one per core) and ``copy`` (return copies of the
    observations, as ``SyncVectorEnv``; ``False`` returns the buffers, overwritten by the
    next call).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        config: _config.ConfigSource = "default",
        num_envs: int = 1,
        *,
        seed: Optional[int] = None,
        overrides: _config.Overrides = None,
        flatten: bool = False,
        invalid_action: str = "first_valid",
        threads: Optional[int] = None,
        copy: bool = True,
        render_mode: Optional[str] = None,
    ):
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r}: fypsim draws nothing (allowed: None)")
        self._n = _Native(config, num_envs, overrides, flatten, invalid_action, "next_step", threads)
        self._first_seed = _config.seed(seed)
        self.num_envs = int(num_envs)
        self.copy = bool(copy)
        self.render_mode = None
        self.single_observation_space = observation_space(self._n.spec, self._n.flatten)
        self.single_action_space = action_space(self._n.spec)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._started = False

    def reset(self, *, seed=None, options: Optional[dict] = None):
        """Resets every environment: an int ``seed`` seeds environment ``i`` with
        ``seed + i``, a list gives each its own; ``options`` as ``FypsimEnv.reset``'s
        (``episode``, ``world``) apply to all."""
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        seeds = _config.seeds(seed, self.num_envs)
        super().reset(seed=seed if isinstance(seed, int) else None)
        episode, world = _config.reset_options(options)
        pairs = self._n.native.reset(seeds, episode, world)
        self._started = True
        infos = {
            "episode": np.array([p[0] for p in pairs], dtype=np.int64),
            "user": np.array([p[1] for p in pairs], dtype=np.int64),
        }
        infos["_episode"] = np.ones(self.num_envs, dtype=bool)
        infos["_user"] = np.ones(self.num_envs, dtype=bool)
        return self._n.observations(self.copy), infos

    def step(self, actions):
        a = actions_array(actions, self.num_envs)
        if not self._started:
            raise ValueError("the episodes are not started: call reset() first")
        self._n.native.step(a)
        infos: dict = {}
        if self._n.replaced.any():
            infos["action_replaced"] = self._n.replaced.copy()
            infos["_action_replaced"] = np.ones(self.num_envs, dtype=bool)
        return (
            self._n.observations(self.copy),
            self._n.rewards.copy(),
            self._n.terminated.copy(),
            self._n.truncated.copy(),
            infos,
        )

    def action_masks(self) -> np.ndarray:
        """Which slots hold a candidate, per environment: shape (num_envs, slots)."""
        return self._n.masks()

    @property
    def spec_info(self) -> dict:
        return dict(self._n.spec)

    def close_extras(self, **kwargs) -> None:
        pass


def make_vec(config: _config.ConfigSource = "default", num_envs: int = 1, **kwargs: Any) -> FypsimVectorEnv:
    """``num_envs`` environments in one native batch:
    ``fypsim.make_vec("longterm", num_envs=64, seed=1)``; the keywords are
    :class:`FypsimVectorEnv`'s (seed, overrides, flatten, invalid_action, threads, copy)."""
    return FypsimVectorEnv(config, num_envs, **kwargs)
