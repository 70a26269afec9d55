"""The browser the Playwright tests drive: Debian's chromium, never Playwright's download.

Importing this module skips the importing test module, with a one-line reason, when there
is no chromium binary or no playwright package.
"""

import shutil

import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
if CHROMIUM is None:
    pytest.skip("no chromium binary (apt-get install -y chromium, or scripts/setup.sh as root)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
