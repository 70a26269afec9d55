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
  case ",$extras," in
    *,test,*|*,sam2,*)
      # sam2 is an sdist only: build it against this venv's torch (no isolated build env
      # pulling another torch) and without its optional CUDA extension.
      .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt torch torchvision setuptools
      SAM2_BUILD_CUDA=0 .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-build-isolation \
        -c constraints.txt "sam2==1.1.0"
      ;;
  esac
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[$extras]"
  touch "$stamp"
fi

# Browser tests (tests/web/test_browser.py) drive the system chromium through Playwright
# (Playwright's own browser download is not reachable on these machines). Installed with
# apt as root when missing; without it those tests skip with a one-line reason.
case ",$extras," in
  *,test,*)
    if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
      if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 \
          || echo "setup: chromium could not be installed with apt-get; the browser tests will be skipped" >&2
      else
        echo "setup: no chromium (install it as root: apt-get install -y chromium); the browser tests will be skipped" >&2
      fi
    fi
    ;;
esac
