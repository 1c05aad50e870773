#!/usr/bin/env bash
# Prints the path of a virtual environment with styletrain installed, building it on first use.
# The environment (torch and friends, ~5 GB) is cached outside the clone, keyed on pyproject.toml;
# the project itself is (re)installed editable from this checkout every time (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(sha256sum pyproject.toml | cut -c1-16)
venv="${STYLETRAIN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/styletrain/venv-$key}"
if [ ! -x "$venv/bin/uv" ] || [ ! -f "$venv/.complete" ]; then
    echo "building $venv (first run: downloads torch, a few minutes)" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet uv >&2
    "$venv/bin/uv" pip install --quiet --python "$venv/bin/python" -e ".[dev,demo]" >&2
    touch "$venv/.complete"
fi
"$venv/bin/uv" pip install --quiet --python "$venv/bin/python" --no-deps -e . >&2
echo "$venv"
