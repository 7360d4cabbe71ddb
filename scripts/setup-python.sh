#!/usr/bin/env bash
# Sets up the clone's Python environment (.venv) and builds and installs the fypsim wheel
# into it. Idempotent: the packages are installed again only when
# python/requirements-dev.txt changes, the wheel is rebuilt only when the Rust or Python
# sources changed (cargo and maturin decide).
#
#   scripts/setup-python.sh            the venv, the test packages and the wheel
#   scripts/setup-python.sh --deps     the venv and the test packages only
#   scripts/setup-python.sh --ray      also Ray RLlib (the Ray example; a large download)
#
# The venv sees the torch that scripts/setup-libtorch.sh installed (a .pth file), so
# Stable-Baselines3 needs no second torch download. Prints the venv's python as its last
# line.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-python3}"
VENV="${FYPSIM_VENV:-.venv}"
what="${1:-all}"

"$PY" - <<'PYCHECK' || { echo "fypsim setup: Python 3.9 or newer is needed (found $("$PY" --version 2>&1))" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 9) else 1)
PYCHECK

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import sys" >/dev/null 2>&1; then
    echo "fypsim setup: creating the Python environment $VENV" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# torch for Stable-Baselines3: the libtorch install's site-packages, seen through a .pth.
TORCH_DIR="$(scripts/setup-libtorch.sh | tail -n 1)"
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$(dirname "$TORCH_DIR")" > "$SITE/fypsim-torch.pth"

stamp="$VENV/.fypsim-requirements"
want="$(sha256sum python/requirements-dev.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    echo "fypsim setup: installing the test packages (python/requirements-dev.txt)" >&2
    "$VPY" -m pip install --quiet --disable-pip-version-check -r python/requirements-dev.txt >&2
    echo "$want" > "$stamp"
fi
if [ "$what" = --ray ]; then
    "$VPY" -c "import ray.rllib" >/dev/null 2>&1 || {
        echo "fypsim setup: installing Ray RLlib (the Ray example only)" >&2
        "$VPY" -m pip install --quiet --disable-pip-version-check "ray[rllib]==2.60.0" >&2
    }
fi

if [ "$what" != --deps ]; then
    # The wheel: the core without libtorch (no LIBTORCH needed), abi3 for CPython >= 3.9.
    echo "fypsim setup: building the fypsim wheel (python/)" >&2
    rm -rf target/wheels/fypsim-*.whl
    env -u LIBTORCH -u LIBTORCH_CXX11_ABI VIRTUAL_ENV="$PWD/$VENV" PATH="$PWD/$VENV/bin:$PATH" \
        maturin build --release --locked --quiet -m python/Cargo.toml -o target/wheels >&2
    "$VPY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall target/wheels/fypsim-*.whl >&2
fi
echo "$PWD/$VPY"
