"""The CPUs this process may use (its affinity mask, which containers and Ray can narrow)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """Cores this process may run on; os.cpu_count() where affinity is not available."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
