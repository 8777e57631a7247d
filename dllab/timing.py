"""Timing helpers for the speed figures scenarios report as ratios (never as asserted seconds)."""

from __future__ import annotations

import time


def time_calls(function, arguments, repeats: int) -> float:
    """Best of three timings of `repeats` calls, after one warm-up call (seconds per call)."""
    function(*arguments)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            function(*arguments)
        best = min(best, (time.perf_counter() - start) / repeats)
    return best
