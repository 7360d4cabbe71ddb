"""The single environment: Gymnasium's and SB3's checkers, the spaces, episodes that
reproduce a CLI run, baselines, evaluation, step logs."""

import warnings

import gymnasium as gym
import numpy as np
import pyarrow.parquet as pq
import pytest
from gymnasium.utils.env_checker import check_env

import fypsim
from conftest import SMALL


@pytest.mark.parametrize("env_id", sorted(fypsim.ENV_IDS))
@pytest.mark.parametrize("flatten", [False, True])
def test_checkers_pass_on_every_registered_id(env_id, flatten):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        # Unbounded Box features (views, watch time) are warned about; nothing else is.
        warnings.filterwarnings("ignore", message=".*infinity.*")
        warnings.filterwarnings("ignore", message=".*Box observation space.*")
        check_env(gym.make(env_id, flatten=flatten).unwrapped, skip_render_check=True)
        sb3_check_env(gym.make(env_id, flatten=flatten), warn=False)


def test_flat_observation_is_gymnasiums_flatten_of_the_dict():
    d = fypsim.make("longterm", seed=5)
    f = fypsim.make("longterm", seed=5, flatten=True)
    od, _ = d.reset()
    of, _ = f.reset()
    for _ in range(40):
        want = gym.spaces.flatten(d.observation_space, od).astype(np.float32)
        np.testing.assert_array_equal(of, want)
        assert f.observation_space.contains(of)
        a = d.baseline_action("random")
        f.baseline_action("random")
        od, _, te, tr, _ = d.step(a)
        of, *_ = f.step(a)
        if te or tr:
            od, _ = d.reset()
            of, _ = f.reset()


def test_registered_ids_and_make_agree():
    a = gym.make("fypsim/Smoke-v0").unwrapped
    b = fypsim.make("smoke")
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    for k in oa:
        np.testing.assert_array_equal(oa[k], ob[k])
    assert gym.make("fypsim:fypsim/Longterm-v0").unwrapped.spec_info["name"] == "longterm"


def test_overrides_change_the_config():
    env = fypsim.make("smoke", overrides={"env.max_steps": 3, "candidates.count": 6})
    assert env.action_space.n == 6
    env.reset(seed=1)
    steps = 0
    while True:
        *_, te, tr, _ = env.step(0)
        steps += 1
        if te or tr:
            break
    assert steps <= 3
    assert fypsim.load_config("smoke", {"env.max_steps": 3})["env"]["max_steps"] == 3


def test_episode_k_equals_row_k_of_eval_episodes_csv(greedy_run):
    table = fypsim.read_run(greedy_run).frame("eval_episodes")
    config = greedy_run / "config.toml"
    for name in ["random", "greedy", "most_viewed", "oracle"]:
        rows = table[table.policy == name].sort_values("episode")
        assert len(rows) == 40
        env = fypsim.make(config)
        env.reset(seed=fypsim.load_config(config)["seed"])
        for row in rows.itertuples():
            obs, info = env.reset(options={"episode": int(row.episode)})  # the config's world
            assert info["user"] == row.user
            ret, n = 0.0, 0
            while True:
                obs, r, te, tr, info = env.step(env.baseline_action(name))
                ret += r
                n += 1
                if te or tr:
                    break
            assert (ret, n) == (row._4, row.steps), (name, row.episode)


def test_evaluate_returns_the_table_fypsim_run_prints(greedy_run):
    config = greedy_run / "config.toml"
    t = fypsim.evaluate(config, lambda obs: 0, name="slot0", episodes=40)
    base = fypsim.read_run(greedy_run).frame("baselines")
    greedy = base[base.policy == "greedy"].iloc[0]
    assert t.row("greedy").mean_return == pytest.approx(greedy.mean_return, abs=1e-12)
    assert t.row("greedy").ci95 == pytest.approx(greedy.ci95, abs=1e-12)
    # Slot 0 is greedy's choice: the same episodes, a paired difference of exactly 0.
    assert t.row("slot0").mean_return == t.row("greedy").mean_return
    assert (t.row("slot0").diff, t.row("slot0").diff_ci95) == (0.0, 0.0)
    oracle = t.row("oracle")
    assert oracle.diff == pytest.approx(oracle.mean_return - t.row("greedy").mean_return)
    text = str(t)
    assert "40 episodes each" in text and "oracle" in text and "- greedy (paired)" in text


def test_step_log_equals_steps_parquet_of_the_same_run(greedy_run):
    config = greedy_run / "config.toml"
    c = fypsim.load_config(config)
    env = fypsim.make(config, log_steps=True, streams="training")
    env.reset(seed=c["seed"])
    for k in range(c["train"]["episodes"]):
        if k > 0:
            env.reset()
        while True:
            *_, te, tr, _ = env.step(env.baseline_action("greedy"))
            if te or tr:
                break
    ours = env.step_log().to_arrow()
    theirs = pq.read_table(greedy_run / "steps.parquet")
    assert ours.column_names == theirs.column_names
    assert "propensity" in ours.column_names and "p_left" in ours.column_names
    assert ours.num_rows == theirs.num_rows > 0
    for name in theirs.column_names:
        assert ours.column(name).to_pylist() == theirs.column(name).to_pylist(), name
    # And through pandas.
    assert env.step_log().to_pandas().shape == (ours.num_rows, ours.num_columns)


def test_baselines_from_python_state_their_probabilities():
    env = fypsim.make("smoke", seed=3)
    env.reset()
    p = env.baseline_probabilities("random")
    mask = env.action_masks()
    assert p.sum() == pytest.approx(1.0) and np.all(p[~mask] == 0)
    assert env.baseline_probabilities("greedy")[0] == 1.0
    assert env.baseline_probabilities("planner") is None
    # A bandit learns: it is no fixed baseline (`fypsim run` trains it beside a run's policy).
    with pytest.raises(ValueError, match="learns"):
        env.baseline_action("linucb")


def test_evaluate_leaves_out_the_learning_baselines_of_a_config():
    # The longterm preset lists the bandits among its baselines: evaluate plays the fixed ones.
    table = fypsim.evaluate("longterm", lambda obs: 0, episodes=3, seed=1,
                            overrides={"train.baselines": ["random", "greedy", "linucb"]})
    names = [row.policy for row in table.rows]
    assert "linucb" not in names and "random" in names


def test_info_carries_the_rust_step():
    env = fypsim.make("longterm", seed=2)
    obs, info = env.reset()
    assert set(info) == {"episode", "user"}
    _, r, _, _, info = env.step(3)
    for key in ["episode", "user", "t", "video", "category", "slot", "action_replaced", "response",
                "watch_s", "time_s", "outcome_p", "expected_rewards"]:
        assert key in info, key
    assert info["slot"] == 3 and info["t"] == 1
    assert info["outcome_p"].sum() == pytest.approx(1.0)
    assert len(info["expected_rewards"]) == env.action_space.n
    assert np.isfinite(r)


def test_a_seed_gives_the_same_episodes_and_options_pick_one():
    env = fypsim.make("longterm")
    first = [env.reset(seed=9)[1]["user"] for _ in range(1)] + [env.reset()[1]["user"] for _ in range(4)]
    again = [env.reset(seed=9)[1]["user"]] + [env.reset()[1]["user"] for _ in range(4)]
    assert first == again
    assert env.reset(options={"episode": 3})[1] == {"episode": 3, "user": first[3]}


def test_read_run_reads_a_cli_run_folder(greedy_run):
    run = fypsim.read_run(greedy_run)
    assert {"steps", "episodes", "eval_episodes", "baselines"} <= set(run.names)
    assert run.config["name"] == "smoke" and run.summary is not None
    assert run.table("episodes").num_rows == 30
    with pytest.raises(KeyError, match="has no table"):
        run.table("nope")


def test_the_log_takes_a_baselines_propensity_only_for_its_own_action():
    env = fypsim.make("longterm", seed=4, log_steps=True)
    env.reset()
    a = env.baseline_action("random")
    env.step(a)                      # the baseline's action: 1 / candidates
    b = env.baseline_action("random")
    env.step((b + 1) % int(env.action_masks().sum()))  # another action: unknown
    env.step(0, propensity=0.25)     # given by the caller
    p = env.step_log().columns()["propensity"]
    assert p[0] == pytest.approx(1 / 10) and np.isnan(p[1]) and p[2] == 0.25
