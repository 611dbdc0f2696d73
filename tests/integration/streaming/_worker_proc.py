"""A worker process for the multiprocess tests: ``python _worker_proc.py SETTINGS_JSON WORKER_ID SLOW_S``.

SLOW_S > 0 makes every online write sleep first, widening the window in which a
SIGKILL lands after the state commit but before the push and the offset commit.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time


def main() -> None:
    from features import open_store
    from sightline.settings import load_settings
    from streaming import FeastSink, IngestWorker

    settings = load_settings(env={}, **json.loads(open(sys.argv[1]).read()))
    worker_id, slow_s = sys.argv[2], float(sys.argv[3])
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format=f"worker-{worker_id} %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)

    class SlowSink(FeastSink):
        def write_online(self, view, rows):
            time.sleep(slow_s)
            super().write_online(view, rows)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sink = SlowSink(open_store(settings), settings.feast_dir, background=True)   # the worker's own writer process
    IngestWorker(settings, worker_id, sink=sink).run(stop)
    print(f"worker-{worker_id} stopped cleanly", flush=True)


if __name__ == "__main__":
    main()
