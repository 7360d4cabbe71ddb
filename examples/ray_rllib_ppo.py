"""Ray RLlib PPO on the longterm preset: `register_env`, two env runners (processes) on
one machine, each stepping four fypsim environments; then evaluated beside the built-in
baselines on the same episodes. The same script runs on a Ray cluster (docs/scaling-out.md).

    scripts/setup-python.sh --ray                 # once: Ray RLlib into .venv
    scripts/dev.sh python examples/ray_rllib_ppo.py [--iterations 5]
"""

import argparse

import numpy as np
import ray
import torch
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.columns import Columns
from ray.tune.registry import register_env

import fypsim

p = argparse.ArgumentParser()
p.add_argument("--iterations", type=int, default=5)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
p.add_argument("--address", default=None, help="a Ray cluster's address (default: a local Ray on this machine)")
a = p.parse_args()


def make_env(ctx):
    # Each env runner (worker_index) and each of its environments (vector_index) gets its
    # own seed, so no two play the same episodes.
    seed = a.seed * 1_000 + 100 * getattr(ctx, "worker_index", 0) + getattr(ctx, "vector_index", 0)
    # Flat observations: RLlib's default network takes one vector.
    return fypsim.make("longterm", seed=seed, flatten=True)


ray.init(address=a.address, include_dashboard=False, num_cpus=None if a.address else 2)
register_env("fypsim-longterm", make_env)
config = (
    PPOConfig()
    .environment("fypsim-longterm")
    .env_runners(num_env_runners=2, num_envs_per_env_runner=4)
    .training(lr=3e-4, gamma=0.95, train_batch_size_per_learner=4_000, minibatch_size=256, num_epochs=4)
    .debugging(seed=a.seed)
)
algo = config.build_algo()
for i in range(a.iterations):
    r = algo.train()
    ret = r.get("env_runners", {}).get("episode_return_mean", float("nan"))
    print(f"iteration {i + 1}: mean training return {ret:.3f}", flush=True)

module = algo.get_module()


def policy(obs):
    with torch.no_grad():
        out = module.forward_inference({Columns.OBS: torch.from_numpy(obs[None])})
    logits = out[Columns.ACTION_DIST_INPUTS][0].numpy()
    logits[obs[: len(logits)] < 0.5] = -np.inf  # the flat observation starts with the action mask
    return int(np.argmax(logits))


print(fypsim.evaluate("longterm", policy, name="rllib_ppo", seed=a.seed, episodes=a.episodes, flatten=True,
                      baselines=["random", "greedy", "myopic_oracle"], world="fresh"))
algo.stop()
ray.shutdown()
