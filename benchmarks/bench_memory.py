"""Peak resident memory of this process: over its lifetime (getrusage) and over one block of work."""

import contextlib
import resource
import sys
from pathlib import Path


def lifetime_peak_mb() -> float:
    """ru_maxrss: the process's peak RSS so far (KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def status_mb(field: str):
    """A memory field of /proc/self/status in MB (VmRSS: resident now, VmHWM: its peak); None off Linux."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field + ":")), None)


@contextlib.contextmanager
def peak_memory():
    """The peak RSS within a `with` block, in the dict it yields: getrusage never resets, so after a first
    scenario it would report that one's peak for every later one; Linux lets a process reset its own
    high-water mark (clear_refs = 5)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        block_peak_supported = True
    except OSError:
        block_peak_supported = False
    report = {}
    yield report
    report.update(block_peak_mb=status_mb("VmHWM") if block_peak_supported else None,
                  getrusage_peak_mb=lifetime_peak_mb())
