"""``FypsimEnv``: one fypsim session per episode, as a ``gymnasium.Env``."""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym
import numpy as np

from fypsim import _config, _native
from fypsim.logs import StepLog
from fypsim.spaces import action_space, observation_space

INVALID_ACTIONS = ("first_valid", "raise")


def _action(action: Any) -> int:
    """A slot from whatever an agent hands over: a Python or numpy integer, or a 0-d array."""
    a = np.asarray(action)
    if a.ndim != 0:
        if a.size == 1:
            a = a.reshape(())
        else:
            raise ValueError(f"an action is one slot (an integer); got an array of shape {a.shape}")
    if a.dtype.kind not in "iub":
        raise TypeError(f"an action is a slot (an integer); got {a.dtype} {a!r}")
    return int(a)


class FypsimEnv(gym.Env):
    """One episode is one session of one user on the short-video feed; each step shows
    one of the user's ``r`` candidates (the action is its slot) and returns the user's
    reward.

    Args:
        config: a shipped preset's name (``"default"``, ``"longterm"``, ...) or a TOML
            file's path.
        seed: the seed of the first ``reset`` that gives none (default: the config's).
        overrides: config keys to change, as the CLI's ``--set``:
            ``{"env.max_steps": 20}``.
        flatten: one flat float32 ``Box`` (Gymnasium's ``flatten`` of the Dict, the
            categorical fields one-hot) instead of the Dict.
        invalid_action: what a slot that holds no candidate does (a user who has seen
            almost everything has fewer than ``r``): ``"first_valid"`` (the default) shows
            slot 0 instead and says so in ``info["action_replaced"]``, so that algorithms
            which ignore masks keep running; ``"raise"`` raises ``ValueError``. An action
            outside ``0..r`` always raises.
        log_steps: keep every step as a row of ``steps.parquet``'s columns
            (:meth:`step_log`).
        streams: ``"evaluation"`` (episode ``k`` draws from its own streams, as
            ``fypsim run``'s evaluation) or ``"training"`` (episodes draw one after the
            other from the streams of ``fypsim run``'s training loop).
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        config: _config.ConfigSource = "default",
        *,
        seed: Optional[int] = None,
        overrides: _config.Overrides = None,
        flatten: bool = False,
        invalid_action: str = "first_valid",
        log_steps: bool = False,
        streams: str = "evaluation",
        render_mode: Optional[str] = None,
    ):
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r}: fypsim draws nothing (allowed: None)")
        self._native = _native.Env(
            _config.source(config), _config.overrides(overrides), bool(flatten), invalid_action, streams
        )
        self._first_seed = _config.seed(seed)
        self._spec = self._native.spec()
        self.flatten = bool(flatten)
        self.observation_space = observation_space(self._spec, self.flatten)
        self.action_space = action_space(self._spec)
        self.render_mode = None
        self._log = StepLog()
        self._log_steps = bool(log_steps)
        self._native.set_logging(self._log_steps)
        # The last baseline action and its probability, for the step log when the next
        # step takes that action.
        self._baseline: Optional[tuple] = None

    # --- Gymnasium -------------------------------------------------------------------
    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        """Starts an episode. ``seed`` seeds it and every later one (episode count back to
        0). ``options``: ``{"episode": k}`` plays episode ``k`` (its user and responses
        are those of row ``k`` of ``eval_episodes.csv``), ``{"world": "fresh"}`` starts
        from the generated world and ``"evolving"`` from the world the earlier episodes
        left (default: the config's ``train.eval_world``)."""
        seed = _config.seed(seed)
        if seed is None and self._first_seed is not None:
            seed, self._first_seed = self._first_seed, None
        super().reset(seed=seed)
        self._baseline = None
        episode, world = _config.reset_options(options)
        return self._native.reset(seed, episode, world)

    def step(self, action, propensity: Optional[float] = None):
        """Shows the candidate in slot ``action``. ``info`` carries what the Rust step
        returns: the episode, user, step ``t``, the shown video, its category and slot,
        whether the action was replaced, the response (watched, skipped, liked,
        session_end), seconds watched, the user's clock, the true outcome probabilities
        of the shown video (watched, skipped, liked, left) and every candidate's true
        expected reward before the step. ``propensity`` (the acting policy's probability
        of the action) goes to the step log."""
        a = _action(action)
        if propensity is None and self._baseline is not None and self._baseline[0] == a:
            propensity = self._baseline[1]
        self._baseline = None
        obs, reward, terminated, truncated, info = self._native.step(a, None if propensity is None else float(propensity))
        return obs, reward, terminated, truncated, info

    def action_masks(self) -> np.ndarray:
        """Which slots hold a candidate (for maskable algorithms: sb3-contrib's)."""
        return self._native.action_mask().astype(bool)

    # --- fypsim ----------------------------------------------------------------------
    @property
    def spec_info(self) -> dict:
        """The observation layout and the config's facts (slots, feature names, nvec,
        step budget, categories, baselines)."""
        return dict(self._spec)

    @property
    def config_toml(self) -> str:
        """The resolved config, every key (as a run folder's config.toml)."""
        return self._native.config_toml()

    def baseline_action(self, name: str) -> int:
        """The action of a built-in baseline (random, greedy, most_viewed, oracle,
        myopic_oracle, planner, retention_planner) on the current observation, drawn from
        the episode's policy stream as ``fypsim run``'s evaluation does. A next ``step``
        that takes this action logs its probability as the propensity (NaN for the
        planners)."""
        a = self._native.baseline_action(name)
        p = self._native.baseline_probabilities(name)
        self._baseline = (a, float("nan") if p is None else float(p[a]))
        return a

    def baseline_probabilities(self, name: str) -> Optional[np.ndarray]:
        """A baseline's probability of each slot now (None for the planners)."""
        return self._native.baseline_probabilities(name)

    def step_log(self, clear: bool = False) -> StepLog:
        """The steps taken since the env was made (or the log last cleared), with
        ``steps.parquet``'s columns: ``.to_arrow()``, ``.to_pandas()``."""
        if not self._log_steps:
            raise ValueError("step logging is off: make the env with log_steps=True")
        self._log.extend(self._native.take_log())
        log = self._log
        if clear:
            self._log = StepLog()
        return log


def make(config: _config.ConfigSource = "default", **kwargs: Any) -> FypsimEnv:
    """A fypsim environment: ``fypsim.make("longterm", seed=1, overrides={"env.max_steps": 20})``;
    the keywords are :class:`FypsimEnv`'s (seed, overrides, flatten, invalid_action,
    log_steps, streams). No wrappers (``gymnasium.make("fypsim/Longterm-v0")`` adds
    Gymnasium's checkers)."""
    return FypsimEnv(config, **kwargs)
