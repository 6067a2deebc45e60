"""What a LocalCluster's workers leave out of the stage's output (their stderr is the
stage's). Its own module: it needs `distributed` at import, which the local engine never
loads."""

from __future__ import annotations

import logging

from distributed import WorkerPlugin

LOGGERS = ("distributed.worker", "distributed.worker.state_machine")


class QuietFailures(WorkerPlugin, logging.Filter):
    """Drops a task's failure, which the client raises with its message and traceback (a
    refused table's one-line error came after a worker's traceback of it), and the
    cancelled tasks of a cluster closing after one. A worker plugin, so a worker its nanny
    restarts gets it too; a cluster joined by address keeps its own logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("Compute Failed") or "ended with CancelledError" in text)

    def setup(self, worker) -> None:
        for name in LOGGERS:
            logging.getLogger(name).addFilter(self)
