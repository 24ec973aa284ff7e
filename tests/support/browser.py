"""Headless Chromium for page tests: Debian's ``chromium`` driven by Playwright for Python.

Never runs ``playwright install``: the browser is the system package (deploy/system-deps.sh
installs it), the driver ships inside the playwright wheel. Tests call :func:`skip_reason` and
skip with its message only when the browser or playwright is truly missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIZES = {"pi": (800, 480), "fullhd": (1920, 1080)}


def chromium_path() -> Path | None:
    """The system Chromium ($FEDVFER_CHROMIUM, /usr/bin/chromium or chromium on PATH)."""
    for candidate in (
        os.environ.get("FEDVFER_CHROMIUM"),
        "/usr/bin/chromium",
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def skip_reason() -> str | None:
    """Why page tests cannot run here, or None when they can."""
    if chromium_path() is None:
        return (
            "Chromium is not installed (Debian package 'chromium'; `make system-deps` or "
            "`apt-get install -y chromium` as root installs it)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (`pip install -e '.[dev]'` installs it)"
    return None


@contextmanager
def launch_browser() -> Iterator[Any]:
    """A headless Chromium ``Browser``; closed (and its process ended) on exit."""
    from playwright.sync_api import sync_playwright

    exe = chromium_path()
    if exe is None:
        raise RuntimeError(skip_reason())
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(exe), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, url: str, size: tuple[int, int], **context_args: Any) -> Any:
    """A new page at ``size`` showing ``url`` (waits for the DOM, not for the endless preview).

    The page's Content-Security-Policy forbids eval, which Playwright's ``wait_for_function``
    needs, so it is bypassed unless ``bypass_csp=False`` is passed.
    """
    context_args.setdefault("bypass_csp", True)
    context = browser.new_context(viewport={"width": size[0], "height": size[1]}, **context_args)
    page = context.new_page()
    page.goto(url, wait_until="domcontentloaded")
    return page
