"""A single-file DQN in the style of CleanRL on fypsim's native vector env: flat
observations, masked Q-values (slots past the candidates are never chosen), a target
network, epsilon-greedy exploration. Everything is in this file.

    scripts/dev.sh python examples/cleanrl_dqn.py [--steps 50000] [--seed 1]
"""

import argparse
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import fypsim

p = argparse.ArgumentParser()
p.add_argument("--config", default="longterm")
p.add_argument("--steps", type=int, default=30_000)
p.add_argument("--seed", type=int, default=1)
p.add_argument("--num-envs", type=int, default=8)
p.add_argument("--lr", type=float, default=2.5e-4)
p.add_argument("--gamma", type=float, default=0.95)
p.add_argument("--buffer", type=int, default=50_000)
p.add_argument("--batch", type=int, default=128)
p.add_argument("--start-e", type=float, default=1.0)
p.add_argument("--end-e", type=float, default=0.05)
p.add_argument("--explore-fraction", type=float, default=0.5)
p.add_argument("--learning-starts", type=int, default=1_000)
p.add_argument("--train-every", type=int, default=1, help="vector steps between updates")
p.add_argument("--target-every", type=int, default=500)
p.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
a = p.parse_args()

random.seed(a.seed)
np.random.seed(a.seed)
torch.manual_seed(a.seed)
torch.set_num_threads(1)

envs = fypsim.make_vec(a.config, num_envs=a.num_envs, seed=a.seed, flatten=True)
n_obs = envs.single_observation_space.shape[0]
n_act = envs.single_action_space.n


class QNetwork(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_obs, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, n_act))

    def forward(self, x):
        return self.net(x)


def masked(q, obs):
    """Q-values with the slots that hold no candidate at -inf (the flat observation
    starts with the action mask)."""
    return q.masked_fill(obs[:, :n_act] < 0.5, float("-inf"))


q_net, target = QNetwork(), QNetwork()
target.load_state_dict(q_net.state_dict())
opt = torch.optim.Adam(q_net.parameters(), lr=a.lr)

# A ring buffer of transitions (next-step autoreset: a step that resets is no transition).
obs_b = np.zeros((a.buffer, n_obs), np.float32)
next_b = np.zeros((a.buffer, n_obs), np.float32)
act_b = np.zeros(a.buffer, np.int64)
rew_b = np.zeros(a.buffer, np.float32)
done_b = np.zeros(a.buffer, np.float32)
size = pos = 0

obs, _ = envs.reset(seed=a.seed)
resetting = np.zeros(a.num_envs, bool)
returns, ep_ret = [], np.zeros(a.num_envs)
start = time.time()
for step in range(0, a.steps, a.num_envs):
    eps = max(a.end_e, a.start_e - (a.start_e - a.end_e) * step / (a.explore_fraction * a.steps))
    with torch.no_grad():
        greedy = masked(q_net(torch.from_numpy(obs)), torch.from_numpy(obs)).argmax(1).numpy()
    valid = obs[:, :n_act].sum(1).astype(np.int64)
    rand = (np.random.random(a.num_envs) * valid).astype(np.int64)  # the valid slots are 0..valid-1
    actions = np.where(np.random.random(a.num_envs) < eps, rand, greedy)
    next_obs, rewards, term, trunc, _ = envs.step(actions)
    for i in np.flatnonzero(~resetting):
        obs_b[pos], next_b[pos], act_b[pos], rew_b[pos], done_b[pos] = obs[i], next_obs[i], actions[i], rewards[i], term[i]
        pos, size = (pos + 1) % a.buffer, min(size + 1, a.buffer)
        ep_ret[i] += rewards[i]
        if term[i] or trunc[i]:
            returns.append(ep_ret[i])
            ep_ret[i] = 0.0
    resetting = term | trunc
    obs = next_obs

    k = step // a.num_envs
    if step >= a.learning_starts and k % a.train_every == 0:
        idx = np.random.randint(0, size, a.batch)
        o, o2 = torch.from_numpy(obs_b[idx]), torch.from_numpy(next_b[idx])
        with torch.no_grad():
            best = masked(q_net(o2), o2).argmax(1, keepdim=True)  # Double DQN
            y = torch.from_numpy(rew_b[idx]) + a.gamma * target(o2).gather(1, best).squeeze(1) * (1 - torch.from_numpy(done_b[idx]))
        q = q_net(o).gather(1, torch.from_numpy(act_b[idx]).unsqueeze(1)).squeeze(1)
        loss = F.smooth_l1_loss(q, y)
        if not torch.isfinite(loss):
            raise SystemExit(f"the loss diverged at step {step} ({loss.item()}): lower --lr")
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k % a.target_every == 0:
            target.load_state_dict(q_net.state_dict())
    if step % 5_000 < a.num_envs and returns:
        print(f"step {step:>7}: mean return of the last 100 episodes {np.mean(returns[-100:]):.3f}, "
              f"epsilon {eps:.2f}, {step / (time.time() - start):.0f} steps/s", flush=True)


def policy(o):
    with torch.no_grad():
        t = torch.from_numpy(o).unsqueeze(0)
        return int(masked(q_net(t), t).argmax(1))


print(fypsim.evaluate(a.config, policy, name="cleanrl_dqn", seed=a.seed, episodes=a.episodes, flatten=True,
                      baselines=["random", "greedy", "myopic_oracle"], world="fresh"))
