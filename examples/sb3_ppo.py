"""Stable-Baselines3 PPO on the longterm preset, through fypsim's native vector env, then
evaluated beside the built-in baselines on the same episodes.

    scripts/dev.sh python examples/sb3_ppo.py [--steps 130000] [--seed 1]

(or, after `pip install ./python stable-baselines3`, `python examples/sb3_ppo.py`).
"""

import argparse

import torch
from stable_baselines3 import PPO

import fypsim

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=20_000, help="training steps (the built-in DQN uses about 130,000)")
p.add_argument("--seed", type=int, default=1)
p.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
a = p.parse_args()
torch.set_num_threads(1)  # the environments step on the other cores

# 8 environments in one native batch; SB3's convention: same-step reset, the last
# observation of an ended episode in info["terminal_observation"].
env = fypsim.make_sb3_vec_env("longterm", num_envs=8, seed=a.seed)
# The Dict observation: SB3's MultiInputPolicy one-hot encodes the MultiDiscrete fields.
model = PPO("MultiInputPolicy", env, n_steps=256, batch_size=256, learning_rate=3e-4, gamma=0.95,
            seed=a.seed, device="cpu", verbose=0)
model.learn(a.steps, progress_bar=False)

# The table `fypsim run` prints: the same users and random numbers for every policy.
table = fypsim.evaluate("longterm", model, name="sb3_ppo", seed=a.seed, episodes=a.episodes,
                        baselines=["random", "greedy", "myopic_oracle"], world="fresh")
print(table)
