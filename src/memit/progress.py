"""Progress bars that a caller can also listen to.

Every long loop in memit draws a tqdm bar on the terminal. The playground (serve/) shows the same
progress in a web page and lets a person cancel an edit, so it listens to the bars drawn in its
own thread through ``listen``. A listener that raises stops the loop where it is: that is how a
cancel reaches an edit without a flag threaded through every function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm as _tqdm

Listener = Callable[[str, int, "int | None"], None]  # (what, done, total or None)
_local = threading.local()


def _notify(desc: str, done: int, total: int | None) -> None:
    for fn in getattr(_local, "listeners", ()):
        fn(desc, done, total)


class tqdm(_tqdm):
    """tqdm, also reporting to this thread's listeners, whether or not the bar is drawn."""

    def __init__(self, iterable=None, *args, **kwargs):
        super().__init__(iterable, *args, **kwargs)
        total = kwargs.get("total")
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self._what, self._total, self._done = kwargs.get("desc") or "", total, kwargs.get("initial") or 0
        _notify(self._what, self._done, self._total)

    def update(self, n=1):
        out = super().update(n)
        self._done += n
        _notify(self._what, self._done, self._total)
        return out

    def __iter__(self):
        for x in super().__iter__():
            yield x
            self._done += 1
            _notify(self._what, self._done, self._total)


def phase(what: str) -> None:
    """A step with no bar of its own (verification, say), for the listeners."""
    _notify(what, 0, None)


@contextmanager
def listen(fn: Listener) -> Iterator[None]:
    """Call ``fn`` on every bar update in this thread while the block runs."""
    listeners = getattr(_local, "listeners", ())
    _local.listeners = (*listeners, fn)
    try:
        yield
    finally:
        _local.listeners = listeners
