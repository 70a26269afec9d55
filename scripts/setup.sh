#!/usr/bin/env bash
# Create .venv and install terramask with the given extras (default: sam).
# torch/torchvision are pinned by constraints.txt to builds that pip finds on this
# project's machines; users elsewhere can install with plain `pip install terramask[sam]`.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-sam}"
python="${PYTHON:-}"
if [ -z "$python" ]; then
  python=$(command -v python3.11 || command -v python3)
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]"
  touch "$stamp"
fi
