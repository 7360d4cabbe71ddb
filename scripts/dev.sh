#!/usr/bin/env bash
# fypsim's one entry point for a fresh machine. Every sub-command first does the set-up
# (idempotent: libtorch 2.13.0 into a shared cache folder outside the clone), then builds.
#
#   scripts/dev.sh run  [CONFIG] [fypsim run options]   train on a config (default: configs/default.toml)
#   scripts/dev.sh test                                  build and run the whole test suite: the Python
#                                                        wheel (the core without libtorch), the core's
#                                                        tests, the Rust suite, then pytest
#   scripts/dev.sh python [ARGS...]                      set up .venv with the fypsim wheel; run its
#                                                        python with ARGS (e.g. examples/sb3_ppo.py)
#   scripts/dev.sh cli  ARGS...                          any fypsim sub-command, e.g. `cli inspect --user 3`
#   scripts/dev.sh bench [CONFIG...] [options]           fypsim bench (figures as a table or JSON)
#   scripts/dev.sh criterion                             criterion benches of the kernels
#   scripts/dev.sh env                                   print the variables to build with cargo by hand
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "fypsim setup: '$1' is required but not installed ($2)" >&2; exit 1; }
}
need cargo "install Rust with rustup"
need python3 "Python 3.9+ installs libtorch from PyPI and runs the Python package"

# The simulation core (config through env, the session driver, the baselines that do not
# learn) builds without default features: no libtorch, no polars, no HTTP stack. The
# Python wheel is built on it (with LIBTORCH unset), which is the test command's build of
# the core; this runs the core's tests the same way and checks that none of those crates is
# in the core's dependency tree.
core_check() {
    echo "fypsim: testing the core without default features (no libtorch)" >&2
    env -u LIBTORCH -u LIBTORCH_CXX11_ABI cargo test --release --locked --lib --no-default-features
    local heavy
    heavy="$(cargo tree --locked -e normal --no-default-features --prefix none --format '{p}' \
        | awk '{print $1}' | grep -xE 'tch|torch-sys|polars|plotters|axum|tokio|reqwest|prometheus-client|indicatif|clap' \
        | sort -u | tr '\n' ' ' || true)"
    if [ -n "$heavy" ]; then
        echo "fypsim: the core (--no-default-features) depends on: $heavy" >&2
        exit 1
    fi
}

cmd="${1:-run}"

LIBTORCH="$(scripts/setup-libtorch.sh | tail -n 1)"
export LIBTORCH
# torch-sys checks the version itself; the libtorch of the PyPI wheel uses the C++11 ABI.
export LIBTORCH_CXX11_ABI=1

[ $# -gt 0 ] && shift
case "$cmd" in
    run)
        cargo build --release --locked --bin fypsim
        exec target/release/fypsim run "$@"
        ;;
    test)
        # The venv and the wheel (the core without libtorch), the core's own tests, then
        # one release build for the Rust tests and the CLI the smoke tests and pytest call.
        VPY="$(scripts/setup-python.sh | tail -n 1)"
        core_check
        cargo test --release --locked "$@"
        echo "fypsim: the Python package's tests (python/tests)" >&2
        FYPSIM_BIN="$PWD/target/release/fypsim" "$VPY" -m pytest -q -p no:cacheprovider python/tests
        ;;
    python)
        VPY="$(scripts/setup-python.sh | tail -n 1)"
        exec "$VPY" "$@"
        ;;
    cli)
        cargo build --release --locked --bin fypsim
        exec target/release/fypsim "$@"
        ;;
    bench)
        cargo build --release --locked --bin fypsim
        exec target/release/fypsim bench "$@"
        ;;
    criterion)
        # Criterion's statistics for the kernels (benches/kernels.rs).
        exec cargo bench --locked --bench kernels "$@"
        ;;
    env)
        echo "export LIBTORCH=$LIBTORCH LIBTORCH_CXX11_ABI=1"
        ;;
    *)
        echo "usage: scripts/dev.sh run|test|python|cli|bench|criterion|env [args...]" >&2
        exit 2
        ;;
esac
