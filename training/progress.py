"""A minimal text progress line on stderr (no dependency, throttled, safe to call from any rank)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update(done, **fields)`` redraws one line at most every ``interval`` seconds."""

    def __init__(self, total: int | None, desc: str, stream: TextIO | None = None,
                 interval: float = 0.5, enabled: bool = True) -> None:
        self.total = total
        self.desc = desc
        self.stream = stream or sys.stderr
        self.interval = interval
        self.enabled = enabled
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, force: bool = False, **fields: object) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self._last < self.interval):
            return
        self._last = now
        if self.total:
            head = f"{self.desc} {100.0 * done / self.total:5.1f}% ({done}/{self.total})"
        else:
            head = f"{self.desc} {done}"
        tail = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        self.stream.write(f"\r{head} {tail} [{now - self.start:.0f}s]")
        self.stream.flush()

    def close(self, done: int, **fields: object) -> None:
        self.update(done, force=True, **fields)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
