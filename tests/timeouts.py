"""A time limit for a test step that must fail, not hang (a blocked open() of a FIFO, a parser loop)."""

import contextlib
import signal
import threading


@contextlib.contextmanager
def time_limit(seconds, what):
    """Fail (not hang) when `what` runs longer than `seconds`; SIGALRM, so main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum, frame):
        raise TimeoutError("%s took more than %ds (hang?)" % (what, seconds))
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
