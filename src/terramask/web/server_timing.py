"""Where one request's time goes: named laps, sent as a ``Server-Timing`` header.

Browsers show the header in their developer tools (Network -> Timing) and expose it to
the page (``PerformanceResourceTiming.serverTiming``), which is how
``benchmarks/web_clicks.py`` splits a click into server parts, transfer and browser parts.

>>> laps = Laps()
>>> ...                      # wait for the model
>>> laps.lap("queue")        # seconds since the previous lap (or the start)
>>> laps.header()            # 'queue;dur=0.4, total;dur=0.4'
"""

from __future__ import annotations

import re
import time

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class Laps:
    """Consecutive named durations of one request (``time.perf_counter`` seconds), in
    the order they were taken. A name taken twice adds up. Used by one thread at a time."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._last = self.started
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> float:
        """Record the seconds since the previous lap (or the start) under ``name``; return them."""
        now = time.perf_counter()
        spent = now - self._last
        self._last = now
        self.add(name, spent)
        return spent

    def add(self, name: str, seconds: float) -> None:
        """Add ``seconds`` under ``name`` (a token: letters, digits, ``_``, ``-``)."""
        if not _NAME.match(name):
            raise ValueError(f"server timing name {name!r} must be letters, digits, '_' or '-'")
        self.seconds[name] = self.seconds.get(name, 0.0) + max(0.0, float(seconds))

    def split(self, name: str, part: str, seconds: float, rest: str) -> None:
        """Divide the lap ``name`` into ``part`` (``seconds`` of it, e.g. the decoder's own
        time reported by the backend) and ``rest`` (what is left)."""
        whole = self.seconds.pop(name, 0.0)
        inner = min(max(0.0, float(seconds)), whole)
        self.add(part, inner)
        self.add(rest, whole - inner)

    def header(self) -> str:
        """``Server-Timing`` value: every lap in milliseconds, then ``total`` since the start."""
        total = time.perf_counter() - self.started
        parts = [f"{name};dur={1000 * s:.1f}" for name, s in self.seconds.items()]
        return ", ".join([*parts, f"total;dur={1000 * total:.1f}"])
