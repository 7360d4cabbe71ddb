#!/usr/bin/env bash
# Installs libtorch (PyTorch 2.13.0, the exact version tch 0.26 needs) from PyPI into one
# cache folder outside the clone, so that every clone shares it. Idempotent: a second call
# only checks the version and prints the folder.
#
# Prints, as its last line, the path of the `torch` package folder (it has include/ and lib/),
# which is what LIBTORCH must point to.
set -euo pipefail

TORCH_VERSION="2.13.0"
CACHE_ROOT="${FYPSIM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fypsim}"
VENV="$CACHE_ROOT/torch-$TORCH_VERSION"
PY="${PYTHON:-python3}"

installed_version() {
    [ -x "$VENV/bin/python" ] || return 1
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m
print(m.version("torch"))
PY
}

if [ "$(installed_version || true)" != "$TORCH_VERSION" ]; then
    echo "fypsim setup: installing torch==$TORCH_VERSION into $VENV (once; about 5 GB)" >&2
    mkdir -p "$CACHE_ROOT"
    # A lock so that two clones setting up at once do not install over each other.
    exec 9>"$CACHE_ROOT/.setup.lock"
    flock 9
    if [ "$(installed_version || true)" != "$TORCH_VERSION" ]; then
        rm -rf "$VENV"
        "$PY" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
        "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" >&2
    fi
    flock -u 9
fi

TORCH_DIR="$("$VENV/bin/python" - <<'PY'
import os, importlib.util
spec = importlib.util.find_spec("torch")
print(os.path.dirname(spec.origin))
PY
)"
if [ ! -d "$TORCH_DIR/lib" ] || [ ! -d "$TORCH_DIR/include" ]; then
    echo "fypsim setup: $TORCH_DIR has no lib/ or include/; remove $VENV and run again" >&2
    exit 1
fi
echo "$TORCH_DIR"
