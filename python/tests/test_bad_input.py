"""Bad input is a Python exception (ValueError, TypeError, FileNotFoundError) with the
CLI's message; no Rust panic (PanicException, a BaseException) crosses the boundary."""

import numpy as np
import pytest

import fypsim
from conftest import ROOT, cli

OK = (ValueError, TypeError, FileNotFoundError, KeyError)


def raises(exc, fn, *args, **kwargs):
    """Calls fn and returns the exception, which must be `exc` (and never a panic)."""
    try:
        fn(*args, **kwargs)
    except BaseException as e:  # noqa: B902 - a PanicException must be seen, not missed
        assert type(e).__name__ != "PanicException", f"a Rust panic crossed into Python: {e}"
        assert isinstance(e, exc), f"{type(e).__name__}: {e}"
        return e
    pytest.fail(f"{fn.__name__} did not raise {exc}")


def test_a_bad_config_path_is_file_not_found_with_the_cli_message(fypsim_bin, tmp_path):
    missing = str(tmp_path / "nope.toml")
    e = raises(FileNotFoundError, fypsim.make, missing)
    r = cli(fypsim_bin, "check", missing)
    assert r.returncode != 0 and str(e) in r.stderr, (str(e), r.stderr)
    raises(FileNotFoundError, fypsim.make_vec, missing, 2)


def test_an_unknown_preset_names_the_presets():
    e = raises(ValueError, fypsim.make, "longtem")
    assert "longterm" in str(e) and "TOML" in str(e)


def test_an_unknown_override_key_has_the_cli_message(fypsim_bin, tmp_path):
    e = raises(ValueError, fypsim.make, "smoke", overrides={"env.max_stepz": 3})
    smoke = str(ROOT / "configs" / "smoke.toml")
    r = cli(fypsim_bin, "run", smoke, "--set", "env.max_stepz=3", "--out", str(tmp_path / "r"), "-q")
    assert "max_stepz" in str(e)
    assert str(e).split(": ", 1)[1] in r.stderr, (str(e), r.stderr)


def test_out_of_range_values_and_malformed_toml(tmp_path):
    e = raises(ValueError, fypsim.make, "smoke", overrides={"candidates.count": 0})
    assert "candidates.count" in str(e)
    e = raises(ValueError, fypsim.make, "smoke", overrides={"world.n_users": 4_000_000_000})
    assert "memory" in str(e)
    bad = tmp_path / "bad.toml"
    bad.write_text("[world\nn_users = 3\n")
    assert "malformed" in str(raises(ValueError, fypsim.make, str(bad)))
    raises(TypeError, fypsim.make, "smoke", overrides={"env.max_steps": object()})
    raises(TypeError, fypsim.make, 42)
    e = raises(ValueError, fypsim.make, "calendar")
    assert "calendar.days" in str(e)


def test_out_of_range_and_masked_actions():
    env = fypsim.make("smoke", seed=1, invalid_action="raise")
    env.reset()
    e = raises(ValueError, env.step, 10)
    assert "outside the action space" in str(e) and "0..10" in str(e)
    raises(ValueError, env.step, -1)
    raises(TypeError, env.step, 1.5)
    raises(ValueError, env.step, np.array([1, 2]))
    # A world so small that users have seen most videos: masked slots exist.
    tiny = {"world.n_videos": 12, "world.n_users": 5, "candidates.count": 10}
    env = fypsim.make("smoke", seed=1, overrides=tiny, invalid_action="raise")
    found = False
    for _ in range(20):
        env.reset()
        mask = env.action_masks()
        if not mask.all():
            bad = int(np.flatnonzero(~mask)[0])
            e = raises(ValueError, env.step, bad)
            assert "not a candidate" in str(e)
            found = True
            break
    assert found
    # Under "first_valid" the same action shows slot 0 and says so.
    env = fypsim.make("smoke", seed=1, overrides=tiny)
    for _ in range(20):
        env.reset()
        mask = env.action_masks()
        if not mask.all():
            *_, info = env.step(int(np.flatnonzero(~mask)[0]))
            assert info["action_replaced"] and info["slot"] == 0
            break
    raises(ValueError, fypsim.make, "smoke", invalid_action="ignore")


def test_step_after_the_end_without_reset():
    env = fypsim.make("smoke", seed=1, overrides={"env.max_steps": 2})
    raises(ValueError, env.step, 0)
    env.reset()
    while True:
        *_, te, tr, _ = env.step(0)
        if te or tr:
            break
    e = raises(ValueError, env.step, 0)
    assert "reset() first" in str(e)
    raises(ValueError, env.baseline_action, "greedy")
    raises(ValueError, fypsim.make("smoke").baseline_action, "dqn")


def test_bad_seeds_and_options():
    env = fypsim.make("smoke")
    raises(ValueError, env.reset, seed=-1)
    raises(ValueError, env.reset, seed=2**64)
    raises(TypeError, env.reset, seed="1")
    raises(ValueError, env.reset, options={"episod": 1})
    raises(ValueError, env.reset, options={"world": "frozen"})


def test_vector_env_refuses_wrong_dtypes_and_shapes_and_changes_nothing():
    envs = fypsim.make_vec("smoke", 4, seed=1, invalid_action="raise")
    raises(ValueError, envs.step, np.zeros(4, dtype=np.int64))  # before reset
    obs, _ = envs.reset()
    raises(TypeError, envs.step, np.zeros(4, dtype=np.float32))
    raises(ValueError, envs.step, np.zeros(3, dtype=np.int64))
    raises(ValueError, envs.step, np.zeros((4, 1), dtype=np.int64))
    e = raises(ValueError, envs.step, np.array([0, 0, 99, 0]))
    assert "environment 2" in str(e)
    # The refused batch stepped nothing.
    after, *_ = envs.step(np.zeros(4, dtype=np.int64))
    again = fypsim.make_vec("smoke", 4, seed=1)
    again.reset()
    same, *_ = again.step(np.zeros(4, dtype=np.int64))
    for k in after:
        np.testing.assert_array_equal(after[k], same[k])
    raises(ValueError, fypsim.make_vec, "smoke", 0)
    raises(TypeError, fypsim.make_vec, "smoke", 2.5)
    raises(ValueError, fypsim.make_vec, "smoke", 2, threads=0)
    raises(ValueError, envs.reset, seed=[1, 2])
    e = raises(ValueError, fypsim.make_vec, "scale-1m", 100_000)
    assert "memory" in str(e) and "100000 environments" in str(e)
