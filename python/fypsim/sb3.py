"""A Stable-Baselines3 ``VecEnv`` over the native batch: same-step autoreset (SB3's
convention), the last observation of an ended episode in ``infos[i]["terminal_observation"]``
and ``"TimeLimit.truncated"`` where the step budget ended it. Needs stable-baselines3
(``pip install "fypsim[sb3]"``); the package itself never imports it."""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

try:
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv
except ImportError as e:  # pragma: no cover - depends on the user's install
    raise ImportError('the SB3 adapter needs stable-baselines3: pip install "fypsim[sb3]"') from e

from fypsim import _config
from fypsim.spaces import action_space, observation_space
from fypsim.vector import _Native, actions_array


class FypsimSB3VecEnv(VecEnv):
    """``num_envs`` fypsim environments for SB3's algorithms: ``PPO("MultiInputPolicy",
    fypsim.make_sb3_vec_env("longterm", 8, seed=1))``. Sub-environment ``i`` plays the
    episodes a ``FypsimEnv`` seeded ``seed + i`` would."""

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
    ):
        self._n = _Native(config, num_envs, overrides, flatten, invalid_action, "same_step", threads)
        super().__init__(int(num_envs), observation_space(self._n.spec, self._n.flatten), action_space(self._n.spec))
        self._next_seed = _config.seed(seed)
        self._actions: Optional[np.ndarray] = None

    def reset(self):
        seeds = [self._seeds[i] if self._seeds else None for i in range(self.num_envs)]
        if all(s is None for s in seeds) and self._next_seed is not None:
            seeds = _config.seeds(self._next_seed, self.num_envs)
        self._next_seed = None
        self._reset_seeds()
        self._n.native.reset([_config.seed(s) for s in seeds], None, None)
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return self._n.observations(True)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions_array(actions, self.num_envs)

    def step_wait(self):
        if self._actions is None:
            raise ValueError("step_wait() without step_async()")
        self._n.native.step(self._actions)
        self._actions = None
        obs = self._n.observations(True)
        dones = self._n.terminated | self._n.truncated
        infos: List[dict] = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(self._n.ended):
            if self._n.flatten:
                infos[i]["terminal_observation"] = self._n.final[i].copy()
            else:
                infos[i]["terminal_observation"] = {k: v[i].copy() for k, v in self._n.final.items()}
            infos[i]["TimeLimit.truncated"] = bool(self._n.truncated[i] and not self._n.terminated[i])
        for i in np.flatnonzero(self._n.replaced):
            infos[i]["action_replaced"] = True
        # float32 rewards, as SB3's own VecEnvs return them.
        return obs, self._n.rewards.astype(np.float32), dones, infos

    def action_masks(self) -> np.ndarray:
        """Which slots hold a candidate, per environment (sb3-contrib's MaskablePPO)."""
        return self._n.masks()

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> List[Any]:
        value = self._n.spec.get(attr_name) if attr_name != "render_mode" else None
        return [value for _ in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"fypsim's sub-environments have no settable attribute {attr_name!r}")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> List[Any]:
        if method_name == "action_masks":
            masks = self.action_masks()
            return [masks[i] for i in self._get_indices(indices)]
        raise AttributeError(f"fypsim's sub-environments have no method {method_name!r} here")

    def env_is_wrapped(self, wrapper_class, indices=None) -> List[bool]:
        return [False for _ in self._get_indices(indices)]

    def _get_indices(self, indices) -> Sequence[int]:
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
