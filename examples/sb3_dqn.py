"""Stable-Baselines3 DQN on the longterm preset through fypsim's native vector env,
evaluated beside the built-in baselines on the same episodes.

    scripts/dev.sh python examples/sb3_dqn.py [--steps 130000] [--seed 1]
"""

import argparse

import torch
from stable_baselines3 import DQN

import fypsim

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=20_000, help="training steps (the built-in DQN uses about 130,000)")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
a = p.parse_args()
torch.set_num_threads(1)

env = fypsim.make_sb3_vec_env("longterm", num_envs=4, seed=a.seed)
model = DQN("MultiInputPolicy", env, learning_rate=1e-4, buffer_size=50_000, learning_starts=1_000,
            batch_size=64, gamma=0.95, train_freq=4, target_update_interval=1_000,
            exploration_fraction=0.3, seed=a.seed, device="cpu", verbose=0)
model.learn(a.steps, progress_bar=False)

print(fypsim.evaluate("longterm", model, name="sb3_dqn", seed=a.seed, episodes=a.episodes,
                      baselines=["random", "greedy", "myopic_oracle"], world="fresh"))
