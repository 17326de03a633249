#!/usr/bin/env bash
# The whole test suite, as CI runs it: the Rust tests, then the Python module (built with
# maturin into a virtual environment under target/, tested with pytest against the CLI) and
# every notebook executed. Needs Rust, a C/C++ compiler and Python ≥ 3.9 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace

# The Python side, in its own environment: nothing is installed beside the project.
venv=target/python-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "maturin>=1.9,<2" pytest nbclient nbformat ipykernel numpy astropy matplotlib
# The dev profile shares every dependency already built by `cargo test` (a release wheel,
# `pip install .`, is what users install).
rm -rf target/wheels
"$venv/bin/maturin" build --profile dev -o target/wheels
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps target/wheels/interf_image-*.whl
"$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
INTERF_IMAGE_BIN="$PWD/target/debug/interf-image" "$venv/bin/python" -m pytest -q tests/python
"$venv/bin/python" notebooks/run_notebooks.py
