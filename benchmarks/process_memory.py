"""This process's memory as the benchmarks report it: resident set and its high-water mark
from ``/proc/self/status``, and resetting that mark so a peak belongs to one measured step."""

from __future__ import annotations


def status_mb(field: str) -> float:
    """``VmRSS`` or ``VmHWM`` of this process from ``/proc/self/status``, in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark (``VmHWM``) to its current RSS; False where the
    kernel does not allow it (the peak then includes what came before)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True
