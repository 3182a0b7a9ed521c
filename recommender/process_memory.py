"""This process's peak resident memory, resettable, so each training phase reports its own peak.

Linux keeps the peak as ``VmHWM`` in ``/proc/self/status``; writing ``5`` to
``/proc/self/clear_refs`` resets it to the current RSS (proc(5)), so a phase's peak is read at its
end after a reset at its start. Elsewhere (no /proc) ``getrusage``'s ``ru_maxrss`` is the best
there is: the peak since the process started, never reset, so later phases report at least the
earlier ones' peak. Plain Python, no Django.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MIB = 2**20


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_bytes() -> int:
    """Peak resident memory since the last :func:`peak_rss_reset` (or since the process started)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # macOS reports bytes, Linux KiB


def peak_rss_reset() -> bool:
    """Start a new peak at the current RSS; False where the platform cannot (the peak then keeps growing)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
