"""Step logs and run folders as dataframes (pyarrow tables or pandas frames; both are
optional: ``pip install "fypsim[frames]"``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the user's install
        raise ImportError('tables need pyarrow: pip install "fypsim[frames]" (pyarrow and pandas)') from e
    return pyarrow


class StepLog:
    """The steps a Python session took, with the columns of a run's ``steps.parquet``
    (episode, t, user, video, slot, category, response, reward and, with a dynamic on,
    watch_s, expected_p, expected_reward, satiation, propensity, left, offered, time_s,
    p_watched, p_skipped, p_liked, p_left). The propensity is the acting policy's
    probability of the action when it gave one (``step(action, propensity=p)``, or a
    baseline's), NaN otherwise."""

    def __init__(self) -> None:
        self._chunks: List[List[Tuple[str, Tuple[str, Any]]]] = []

    def extend(self, columns: List[Tuple[str, Tuple[str, Any]]]) -> None:
        if columns and len(_values(columns[0])) > 0:
            self._chunks.append(columns)

    def __len__(self) -> int:
        return sum(len(_values(c[0])) for c in self._chunks)

    def columns(self) -> Dict[str, list]:
        """The columns as Python lists (no table library needed)."""
        out: Dict[str, list] = {}
        names: List[str] = []
        for chunk in self._chunks:
            for name, _ in chunk:
                if name not in names:
                    names.append(name)
        for name in names:
            col: list = []
            for chunk in self._chunks:
                d = dict(chunk)
                n = len(_values(chunk[0]))
                if name in d:
                    col.extend(list(d[name][1]))
                else:  # a chunk without the detail columns: nulls
                    col.extend([None] * n)
            out[name] = col
        return out

    def to_arrow(self):
        """A ``pyarrow.Table``."""
        pa = _pyarrow()
        types = {}
        for chunk in self._chunks:
            for name, (kind, _) in chunk:
                types.setdefault(name, kind)
        arrow_type = {
            "uint32": pa.uint32(),
            "float64": pa.float64(),
            "float64?": pa.float64(),
            "bool?": pa.bool_(),
            "str": pa.string(),
            "list<uint32>": pa.list_(pa.uint32()),
        }
        cols = self.columns()
        if not cols:
            return pa.table({})
        return pa.table({n: pa.array(v, type=arrow_type[types[n]]) for n, v in cols.items()})

    def to_pandas(self):
        """A ``pandas.DataFrame``."""
        return self.to_arrow().to_pandas()


def _values(col: Tuple[str, Tuple[str, Any]]):
    return col[1][1]


class Run:
    """A ``fypsim run`` folder: its tables by name (``steps``, ``episodes``,
    ``eval_episodes``, ``baselines``, ...), its resolved config and its summary."""

    def __init__(self, path: Path) -> None:
        self.path = path
        files = sorted(p for p in path.iterdir() if p.suffix in (".parquet", ".csv") and p.is_file())
        self._files: Dict[str, Path] = {}
        for p in files:
            # Parquet first when a table is written both ways.
            if p.stem not in self._files or p.suffix == ".parquet":
                self._files[p.stem] = p

    @property
    def names(self) -> List[str]:
        """The tables in the folder."""
        return sorted(self._files)

    def table(self, name: str):
        """The table ``name`` as a ``pyarrow.Table``."""
        pa = _pyarrow()
        if name not in self._files:
            raise KeyError(f"{self.path} has no table {name!r} (it has: {', '.join(self.names) or 'none'})")
        p = self._files[name]
        try:
            if p.suffix == ".parquet":
                return pa.parquet.read_table(p)
            return pa.csv.read_csv(p)
        except (OSError, pa.ArrowInvalid) as e:
            raise ValueError(f"cannot read table {p}: {e}") from e

    def frame(self, name: str):
        """The table ``name`` as a ``pandas.DataFrame``."""
        return self.table(name).to_pandas()

    def __getitem__(self, name: str):
        return self.frame(name)

    @property
    def config(self) -> Optional[Dict[str, Any]]:
        """The run's resolved config (config.toml) as a dict, every key included."""
        from fypsim import _native

        p = self.path / "config.toml"
        if not p.exists():
            return None
        return json.loads(_native.config_json(str(p)))

    @property
    def summary(self) -> Optional[Dict[str, Any]]:
        """summary.json, when the run finished."""
        p = self.path / "summary.json"
        if not p.exists():
            return None
        with open(p) as f:
            return json.load(f)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, tables={self.names})"


def read_run(path: "os.PathLike[str] | str") -> Run:
    """A ``fypsim run`` folder (``results/<name>/seed<s>-<NNN>/``) as a :class:`Run`."""
    p = Path(os.fspath(path))
    if not p.exists():
        raise FileNotFoundError(f"no run folder at {p}")
    if not p.is_dir():
        raise NotADirectoryError(f"{p} is a file; read_run takes a run folder (results/<name>/seed<s>-<NNN>/)")
    return Run(p)
