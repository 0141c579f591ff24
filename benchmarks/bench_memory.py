"""Peak resident memory of this process: over its lifetime (getrusage) and over one block of work."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def lifetime_peak_mb() -> float:
    """ru_maxrss: the process's peak RSS so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _status_mb(field: str):
    """A /proc/self/status memory field in MB (Linux; None elsewhere)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":")), None)


def current_rss_mb():
    """Resident memory now: what a long run's flat memory is judged on."""
    return _status_mb("VmRSS")


class PeakMemory:
    """Peak RSS within a `with` block: getrusage never resets, so after a first scenario it would report
    that scenario's peak for every later one; Linux lets a process reset its high-water mark (clear_refs = 5)."""

    def __enter__(self):
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.block_peak_supported = True
        except OSError:
            self.block_peak_supported = False
        return self

    def __exit__(self, *exc):
        block_peak = _status_mb("VmHWM") if self.block_peak_supported else None
        self.report = {"block_peak_mb": block_peak, "getrusage_peak_mb": lifetime_peak_mb()}
        return False
