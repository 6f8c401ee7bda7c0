"""tqdm progress bars fed by C callbacks, with Ctrl-C turned into a clean cancel."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

from tqdm import tqdm


class Interrupt:
    """While active, SIGINT only sets `requested`; the C callback then asks the library to stop."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def interruptible() -> Iterator[Interrupt]:
    state = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield state  # signal handlers can only be installed from the main thread
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        state.requested = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield state
    finally:
        signal.signal(signal.SIGINT, previous)


def bar(total: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)
