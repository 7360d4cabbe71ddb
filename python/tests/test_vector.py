"""The native vector env: equal to SyncVectorEnv over single envs; the SB3 adapter equal to
SB3's DummyVecEnv over single envs."""

import gymnasium as gym
import numpy as np
import pytest

import fypsim


def valid_actions(rng, masks):
    """A uniformly random valid slot per row."""
    return np.array([rng.choice(np.flatnonzero(m)) for m in masks], dtype=np.int64)


def assert_obs_equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("config,flatten", [("default", False), ("longterm", True)])
def test_vector_env_equals_sync_vector_env_for_10000_steps(config, flatten):
    n, steps = 8, 10_000 // 8
    over = {"env.max_steps": 12}
    native = fypsim.make_vec(config, n, overrides=over, flatten=flatten)
    sync = gym.vector.SyncVectorEnv([lambda: fypsim.make(config, overrides=over, flatten=flatten) for _ in range(n)])
    assert native.metadata["autoreset_mode"] == sync.metadata["autoreset_mode"]
    assert native.single_observation_space == sync.single_observation_space
    on, _ = native.reset(seed=100)
    os_, _ = sync.reset(seed=100)
    assert_obs_equal(on, os_)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(steps):
        a = valid_actions(rng, native.action_masks())
        on, rn, tn, un, _ = native.step(a)
        os_, rs, ts, us, _ = sync.step(a)
        assert_obs_equal(on, os_)
        np.testing.assert_array_equal(rn, rs)
        np.testing.assert_array_equal(tn, ts)
        np.testing.assert_array_equal(un, us)
        ends += int(np.sum(tn | un))
    assert ends > 100  # many episodes ended and were reset along the way


def test_make_vec_through_gymnasium_uses_the_native_env():
    envs = gym.make_vec("fypsim/Smoke-v0", num_envs=3)
    assert isinstance(envs.unwrapped, fypsim.FypsimVectorEnv)
    obs, info = envs.reset(seed=1)
    assert obs["candidates"].shape == (3, 10, 4) and list(info["episode"]) == [0, 0, 0]


def test_sb3_adapter_equals_dummy_vec_env():
    from stable_baselines3.common.vec_env import DummyVecEnv

    n, over = 4, {"env.max_steps": 10}
    ours = fypsim.make_sb3_vec_env("longterm", n, overrides=over)
    dummy = DummyVecEnv([lambda: fypsim.make("longterm", overrides=over) for _ in range(n)])
    ours.seed(7)
    dummy.seed(7)
    assert_obs_equal(ours.reset(), dummy.reset())
    rng = np.random.default_rng(1)
    ended = 0
    for _ in range(600):
        a = valid_actions(rng, ours.action_masks())
        ours.step_async(a)
        dummy.step_async(a)
        o1, r1, d1, i1 = ours.step_wait()
        o2, r2, d2, i2 = dummy.step_wait()
        assert_obs_equal(o1, o2)
        np.testing.assert_array_equal(r1, r2)
        np.testing.assert_array_equal(d1, d2)
        for x, y in zip(i1, i2):
            assert ("terminal_observation" in x) == ("terminal_observation" in y)
            if "terminal_observation" in x:
                ended += 1
                assert_obs_equal(x["terminal_observation"], y["terminal_observation"])
                assert x["TimeLimit.truncated"] == y.get("TimeLimit.truncated", False)
    assert ended > 50


def test_sb3_ppo_learns_through_the_adapter_without_error():
    from stable_baselines3 import PPO

    env = fypsim.make_sb3_vec_env("smoke", 4, seed=0, flatten=True)
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    t = fypsim.evaluate("smoke", model, name="ppo", episodes=20, flatten=True)
    assert np.isfinite(t.row("ppo").mean_return)
