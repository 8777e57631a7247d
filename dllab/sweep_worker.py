"""What dllab installs in every Dask worker of a sweep (imported only when a sweep connects)."""

from __future__ import annotations

import signal
import threading

from distributed import WorkerPlugin


class IgnoreInterrupt(WorkerPlugin):
    """A worker ignores Ctrl-C (SIGINT): on Ctrl-C at a terminal every process of the foreground
    group receives it, and the sweep's client stops the runs in order instead (cancel what has not
    started, interrupt what runs, so that each run records status "interrupted" itself)."""

    name = "dllab-ignore-interrupt"

    def setup(self, worker) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
