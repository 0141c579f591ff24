"""Peak resident memory of this process: over its lifetime (getrusage) and over one block of work."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def lifetime_peak_mb() -> float:
    """ru_maxrss: the process's peak RSS so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _status_mb(field: str):
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _high_water_mark_mb():
    return _status_mb("VmHWM")


def current_rss_mb():
    """Resident memory now (Linux; None elsewhere): what a long run's flat memory is judged on."""
    return _status_mb("VmRSS")


class PeakMemory:
    """Peak RSS within a `with` block.

    getrusage never resets, so after a first scenario it would report that scenario's peak for
    every later one; Linux lets a process reset its own high-water mark (clear_refs = 5).
    """

    def __enter__(self):
        try:
            CLEAR_REFS.write_text("5")
            self.block_peak_supported = True
        except OSError:
            self.block_peak_supported = False
        return self

    def __exit__(self, *exc):
        self.block_peak = _high_water_mark_mb() if self.block_peak_supported else None
        self.lifetime_peak = lifetime_peak_mb()
        return False

    def report(self) -> dict:
        return {"block_peak_mb": self.block_peak, "getrusage_peak_mb": self.lifetime_peak}
