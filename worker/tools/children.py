"""Child processes that do not outlive the process that started them, even if it is killed.

``preexec_fn=die_with_parent`` (``subprocess``/``asyncio.create_subprocess_exec``) asks the
kernel to send the child SIGTERM when its parent dies (Linux ``PR_SET_PDEATHSIG``), so a
``worker demo`` or ``make bench`` killed with SIGKILL leaves no worker or broker behind: a
worker then drains and exits as on any SIGTERM. Elsewhere it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from typing import Final

_PR_SET_PDEATHSIG: Final = 1


def _libc() -> ctypes.CDLL | None:
    # Loaded once in the parent: the child, between fork and exec, only makes the call.
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC: Final = _libc()


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (Linux; else nothing)."""
    if _LIBC is None:
        return
    with contextlib.suppress(AttributeError):
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
