"""Progress lines on stderr: rewritten in place on a terminal, at most one a few seconds apart in a log."""

from __future__ import annotations

import sys
import time

LOG_INTERVAL_S = 5.0


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.pending = ""

    def update(self, message: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            print(f"\r[generate] {message}\033[K", end="", file=sys.stderr, flush=True)
            self.pending = message
        elif time.time() - self.last >= LOG_INTERVAL_S:
            print(f"[generate] {message}", file=sys.stderr, flush=True)
            self.last, self.pending = time.time(), ""
        else:
            self.pending = message

    def done(self) -> None:
        """End the line on a terminal; in a log, print the last message if it was held back."""
        if self.enabled and (self.tty or self.pending):
            print("" if self.tty else f"[generate] {self.pending}", file=sys.stderr, flush=True)
        self.pending, self.last = "", 0.0
