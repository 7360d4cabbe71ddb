"""Turning Python arguments into what the native core takes: a config source, the
CLI's ``--set`` overrides, seeds."""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

ConfigSource = Union[str, "os.PathLike[str]"]
Overrides = Union[Mapping[str, Any], Sequence[str], None]

_U64 = 2**64


def source(config: ConfigSource) -> str:
    """A preset's name or a TOML file's path, as a string."""
    if isinstance(config, os.PathLike):
        return os.fspath(config)
    if not isinstance(config, str):
        raise TypeError(
            f"config must be a shipped preset's name or the path of a TOML file, not {type(config).__name__}"
        )
    return config


def _toml_value(key: str, v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(key, x) for x in v) + "]"
    raise TypeError(
        f"override {key!r}: a {type(v).__name__} is not a config value (allowed: bool, int, float, str, list)"
    )


def overrides(values: Overrides) -> list:
    """`{"env.max_steps": 20}` (or `["env.max_steps=20"]`) as the CLI's `--set` assignments."""
    if values is None:
        return []
    if isinstance(values, Mapping):
        out = []
        for k, v in values.items():
            if not isinstance(k, str):
                raise TypeError(f"override keys are strings such as \"env.max_steps\", not {k!r}")
            out.append(f"{k}={_toml_value(k, v)}")
        return out
    if isinstance(values, str):
        raise TypeError('overrides are a dict such as {"env.max_steps": 20} or a list of "key=value" strings')
    out = []
    for a in values:
        if not isinstance(a, str):
            raise TypeError(f'overrides as a list hold "key=value" strings, not {a!r}')
        out.append(a)
    return out


def seed(value: Optional[int], what: str = "seed") -> Optional[int]:
    """A seed as the core takes it: None, or an integer in 0..2**64."""
    if value is None:
        return None
    try:
        import numpy as np

        if isinstance(value, np.integer):
            value = int(value)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not 0 <= value < _U64:
        raise ValueError(f"{what} {value} is out of range (allowed: 0 to 2**64 - 1)")
    return value


def seeds(value: Union[int, Iterable[Optional[int]], None], n: int) -> list:
    """Gymnasium's vector seeding: an int seeds sub-environment i with seed + i; a list
    gives each its own; None leaves every one to its next episode."""
    if value is None:
        return [None] * n
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{len(value)} seeds for {n} environments: give one per environment, or one int")
        return [seed(s) for s in value]
    s = seed(value)
    if s + n > _U64:
        raise ValueError(f"seed {s} is out of range for {n} environments (seed + i must stay below 2**64)")
    return [s + i for i in range(n)]


def reset_options(options) -> tuple:
    """``reset``'s options as (episode, world): ``{"episode": k, "world": "fresh"}``."""
    options = dict(options or {})
    episode = options.pop("episode", None)
    world = options.pop("world", None)
    if options:
        raise ValueError(f"unknown reset options {sorted(options)} (allowed: episode, world)")
    if episode is not None:
        episode = seed(episode, "options['episode']")
    if world is not None and not isinstance(world, str):
        raise TypeError('options["world"] is "fresh" or "evolving"')
    return episode, world
