"""The observation and action spaces, built from the native layout (``spec``)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces


def dict_space(spec: dict) -> spaces.Dict:
    """The observation as a Dict: the user's numbers (``user``: age, watched, session
    length), each candidate slot's numbers (``candidates``: one row per slot, the columns
    ``spec["candidate_features"]``), the categorical fields as a MultiDiscrete
    (``categorical``: gender, region, the two interests, the last category and response,
    then each slot's category, and with video embeddings each slot's video id), which slots
    hold a candidate (``action_mask``), and with a session encoder the session's last steps
    (``history``)."""
    r = spec["slots"]
    per_slot = len(spec["candidate_features"])
    inf = np.float32(np.inf)
    d = {
        "action_mask": spaces.MultiBinary(r),
        "candidates": spaces.Box(-inf, inf, (r, per_slot), np.float32),
        "categorical": spaces.MultiDiscrete(np.asarray(spec["nvec"], dtype=np.int64)),
        "user": spaces.Box(-inf, inf, (len(spec["user_features"]),), np.float32),
    }
    hs, hf = spec["history_shape"]
    if hs > 0:
        d["history"] = spaces.Box(-inf, inf, (hs, hf), np.float32)
    return spaces.Dict(d)


def flat_space(spec: dict) -> spaces.Box:
    """The flat observation: Gymnasium's ``flatten`` of the Dict space (keys in sorted
    order; the categorical fields one-hot), in float32."""
    f = spaces.flatten_space(dict_space(spec))
    assert f.shape == (spec["flat_len"],), (f.shape, spec["flat_len"])
    return spaces.Box(f.low.astype(np.float32), f.high.astype(np.float32), f.shape, np.float32)


def observation_space(spec: dict, flatten: bool) -> spaces.Space:
    return flat_space(spec) if flatten else dict_space(spec)


def action_space(spec: dict) -> spaces.Discrete:
    """A slot: 0 .. slots-1 (slot 0 holds the best business score)."""
    return spaces.Discrete(spec["slots"])
