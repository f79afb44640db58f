"""Peak-memory readings shared by the benchmark scripts (Linux ``/proc``)."""

from __future__ import annotations


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` field in MB: ``VmRSS`` (now) or ``VmHWM`` (peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> bool:
    """Reset the peak RSS to the current RSS, so the next ``VmHWM`` reading is per stage."""
    try:  # Linux: writing 5 resets VmHWM (peak RSS) to the current RSS.
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
