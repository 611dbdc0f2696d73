"""``run_workers``: N ingest worker processes in one consumer group, restarted if they die.

Kafka's group protocol does the sharing: when a worker joins, dies or stops, the
group rebalances and its partitions move to the others.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time

from sightline.settings import Settings

log = logging.getLogger(__name__)


def worker_main(settings: Settings, worker_id: str, max_idle_s: float | None = None) -> None:
    """Process entry point: run one ``IngestWorker`` until SIGTERM/SIGINT."""
    from streaming._worker import IngestWorker

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s worker-{worker_id} %(levelname)s %(name)s: %(message)s")
    IngestWorker(settings, worker_id).run(stop, max_idle_s=max_idle_s)


def run_workers(settings: Settings, workers: int, stop: threading.Event | None = None, *, restart: bool = True,
                max_idle_s: float | None = None) -> None:
    """Run ``workers`` processes until ``stop`` is set; a worker that dies is restarted (same id)."""
    ctx = multiprocessing.get_context("spawn")
    stop = stop or threading.Event()

    def start(i: int):
        proc = ctx.Process(target=worker_main, args=(settings, str(i), max_idle_s), name=f"sightline-ingest-{i}", daemon=False)
        proc.start()
        log.info("started ingest worker %d (pid %d)", i, proc.pid)
        return proc

    procs = {i: start(i) for i in range(workers)}
    restarts: dict[int, list[float]] = {i: [] for i in procs}
    try:
        while not stop.is_set():
            if all(not p.is_alive() for p in procs.values()) and max_idle_s is not None:
                break
            for i, proc in list(procs.items()):
                if proc.is_alive() or stop.is_set():
                    continue
                if proc.exitcode == 0 and max_idle_s is not None:
                    continue
                recent = [t for t in restarts[i] if time.monotonic() - t < 60]
                if not restart or len(recent) >= 5:
                    log.error("ingest worker %d exited with %s; not restarting", i, proc.exitcode)
                    continue
                log.warning("ingest worker %d exited with %s; restarting", i, proc.exitcode)
                restarts[i] = recent + [time.monotonic()]
                procs[i] = start(i)
            stop.wait(0.5)
    finally:
        for proc in procs.values():
            if proc.is_alive():
                proc.terminate()   # SIGTERM: the worker flushes and commits
        deadline = time.monotonic() + 30
        for proc in procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("ingest worker pid %d did not stop in 30 s; killing it", proc.pid)
                proc.kill()
                proc.join(5)
