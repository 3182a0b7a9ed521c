"""gunicorn's configuration: ``gunicorn -c python:config.gunicorn config.wsgi …`` (run_stack, Dockerfile, compose).

Only what the command lines cannot say: hooks. Everything else (bind, workers) stays on the
command line where each deployment sets it.
"""


def child_exit(server, worker) -> None:
    """A worker has exited: drop its live gauges from the metrics directory (multiprocess mode).

    Counters and histograms of a dead worker are kept on purpose (a total must not drop when a
    worker is replaced); a live gauge describes a process that is gone. Imported here, in the
    master, only when a worker exits, so the master itself opens no metric files at start.
    """
    from prometheus_client import multiprocess

    from config.metrics import MULTIPROCESS_DIRECTORY, process_identifier

    if MULTIPROCESS_DIRECTORY:
        multiprocess.mark_process_dead(process_identifier(worker.pid), path=MULTIPROCESS_DIRECTORY)
