"""The garbage collector's settings for a ``worker run`` (or ``worker platform``) process.

A worker allocates a few container objects per message (the message, its work item, its
acknowledgement slot) and reference counting frees nearly all of them within milliseconds;
only the messages of a batch route, or of a lane that waits, live longer. CPython starts a
young-generation collection every 700 net allocations of such objects, and each collection
walks every young object still alive, then promotes it, so that the next, older collections
walk it again. On a storage route that holds a thousand messages in flight, collections
took about 2.8 us of the ~16 us of worker CPU per event, measured on the 2-core machine of
BENCHMARKS.md (0.9 us of ~10 on a no-op route). Two settings make them rare without letting
cyclic garbage (a failed handler's exception and traceback, say) pile up without end:

- :func:`gc.freeze` once the App is imported: the modules, classes and the App's own
  objects leave the collector's view, so that the rare full collections do not walk them;
- the young generation's threshold goes from 700 to :data:`YOUNG_THRESHOLD` net
  allocations: objects that reference counting frees never add up to it, so collections
  run when garbage really builds up, and then find most batch messages already gone.

Only ``worker run`` and ``worker platform`` do this (a program that embeds the worker or the
platform keeps its own settings). A startup hook that wants other thresholds calls
:func:`gc.set_threshold`: it runs later. The platform holds a few long-lived objects per
subscription, session and queued message; with CPython's default threshold, 100,000 shared
subscriptions made in two seconds set off a full collection at every quarter of growth, each
stalling every client for up to 90 ms.
"""

from __future__ import annotations

import gc
from typing import Final

#: net allocations of container objects between young-generation collections (CPython: 700)
YOUNG_THRESHOLD: Final = 20_000


def tune() -> None:
    """Freeze what exists now and raise the young generation's threshold (older ones kept)."""
    gc.collect()  # what import-time work left behind goes now, not frozen forever
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
