"""Item (creative or sku) and campaign statistics for the request path, kept fresh by one
refresher process that any number of server processes subscribe to.

Why a separate process: reading the statistics of a whole snapshot (~53,000 items in
the benchmark world) is pure-Python work; in a server process it would hold the GIL the
request threads need. Why one for several servers: each server process of a
``ServerGroup`` would otherwise read the same rows again, and on a 2-core machine the
duplicated reads cost more than anything else beside the requests themselves (a
profile at 250 requests/s: the two refreshers took 13 % of all sampled CPU).

The refresher (``ItemStatsHub``) listens on a Unix socket. A subscriber
(``ItemFeatures``) connects, says which ids its catalog holds, receives every row the
hub holds, and from then on only the rows that changed (in slices, so applying them
never holds the subscriber's GIL for long). The hub reads the union of its subscribers'
ids every ``refresh_s``, stretched to 10× the read time so it never takes more than ~10 %
of a core, at nice +10 after its first read (start-up at normal priority: niced, it was starved by the servers starting beside it). It exits when its owner closes its lifeline (stdin). On the SQLite
online store most of those reads fetch only the rows written since the previous one
(``ItemStatsReader.changes``): re-reading and re-decoding every row to find the few that
changed cost ~0.5 ms of CPU per served request at 300 requests/s.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

from serving._stats_reader import ItemStatsReader, StatsRead

log = logging.getLogger(__name__)


_NICE = 10
"""Niceness the hub adds to its own: the request threads of the servers come first."""


class ItemStatsHub:
    """The refresher process (see the module docstring); ``address`` is its Unix socket."""

    def __init__(self, settings, *, refresh_s: float | None = None, slice_rows: int = 2_000) -> None:
        self._settings = settings
        self.refresh_s = settings.serving.feature_refresh_s if refresh_s is None else refresh_s
        self._slice_rows = slice_rows
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self.address = ""

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout_s: float = 60.0) -> "ItemStatsHub":
        if self._proc is not None:
            return self
        self._dir = tempfile.mkdtemp(prefix="sightline-stats-")    # short: a socket path has ~100 bytes
        self.address = os.path.join(self._dir, "hub.sock")
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])}
        cmd = [sys.executable, "-c", "from serving._item_stats import _hub_main; _hub_main()"]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        config = pickle.dumps((self._settings, self.refresh_s, self._slice_rows, self.address))
        self._proc.stdin.write(len(config).to_bytes(8, "big") + config)
        self._proc.stdin.flush()
        ready = self._proc.stdout.readline()       # the hub says "ready" once it listens
        if ready.strip() != b"ready":
            code = self._proc.wait(timeout_s)
            self._proc = None
            from serving.errors import Unavailable

            raise Unavailable(f"the item-statistics refresher did not start (exit code {code}); see its log above")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()               # the lifeline: the hub exits on EOF
        except OSError:
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout_s)
        self._proc.stdout.close()
        self._proc = None
        try:
            os.unlink(self.address)
        except OSError:
            pass
        try:
            os.rmdir(self._dir)
        except OSError:
            pass

    def __enter__(self) -> "ItemStatsHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class ItemFeatures:
    """A server process's view of the item and campaign statistics (see the module docstring).

    ``item(id)`` / ``campaign(id)`` return ``{"item_<field>": value}`` dicts (empty when
    unknown) and never lock: single-key dict operations are atomic. ``hub_address``: the
    socket of a shared hub (a ``ServerGroup``'s); ``None`` starts and owns a hub of its own.

    ``version_fn`` is polled every ``refresh_s`` (cheap: the current catalog object); when it
    returns a different object, ``ids_fn`` gives the new id lists, which go to the hub.
    (Rebuilding and comparing ~53,000 sorted ids every poll held the GIL for up to a few
    hundred ms on a busy machine.)
    """

    def __init__(self, settings, ids_fn: Callable[[], tuple[Iterable[str], Iterable[str]]], *,
                 version_fn: Callable[[], object] | None = None, refresh_s: float | None = None,
                 hub_address: str | None = None) -> None:
        self._settings = settings
        self._ids_fn = ids_fn
        self._version_fn = version_fn or ids_fn
        self.refresh_s = settings.serving.feature_refresh_s if refresh_s is None else refresh_s
        self._hub_address = hub_address
        self._own_hub: ItemStatsHub | None = None
        self._rows: dict[str, dict[str, dict]] = {"item": {}, "campaign": {}}
        self._conn = None
        self._send_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._sent_version: object = None
        self._sent_ids: tuple | None = None
        self._columns: list = []          # StatsColumns of the catalogs in use, newest last
        self._columns_lock = threading.Lock()
        self.refreshes = 0
        self.failures = 0
        self.last_refresh_s = 0.0
        self.last_error = ""

    @property
    def shared(self) -> bool:
        """Whether the rows come from a hub other server processes share."""
        return self._hub_address is not None

    def item(self, item_id: str) -> dict:
        return self._rows["item"].get(item_id, {})

    def campaign(self, campaign_id: str) -> dict:
        return self._rows["campaign"].get(campaign_id, {})

    def columns(self, n_rows: int, item_rows, ad_campaigns, keep: int = 2):
        """``StatsColumns`` for a catalog's rows, filled with the rows held now and kept up to
        date from then on (for the ``keep`` newest catalogs: requests may still hold the
        previous one while the next is swapped in)."""
        from serving._stats_columns import StatsColumns

        columns = StatsColumns(n_rows, item_rows, ad_campaigns)
        with self._columns_lock:
            for kind in ("item", "campaign"):
                columns.fill(kind, list(self._rows[kind].items()))
            self._columns = [*self._columns, columns][-keep:]
        return columns

    def start(self) -> "ItemFeatures":
        if self._conn is not None:
            return self
        from multiprocessing.connection import Client

        address = self._hub_address
        if address is None:
            self._own_hub = ItemStatsHub(self._settings, refresh_s=self.refresh_s).start()
            address = self._own_hub.address
        self._conn = Client(address, family="AF_UNIX")
        self._stop.clear()
        # read before the first write: a hub that already holds rows sends them all on
        # connect, and reads this subscriber's ids only after that. With both sides writing
        # more than a socket buffer and neither reading, start-up hung (53,000 item rows).
        reader = threading.Thread(target=self._apply, name="serving-item-features", daemon=True)
        reader.start()
        self._send_ids()
        watcher = threading.Thread(target=self._watch_ids, name="serving-item-ids", daemon=True)
        watcher.start()
        self._threads = [reader, watcher]
        return self

    def _send_ids(self) -> None:
        version = self._version_fn()
        if self._sent_ids is not None and version is self._sent_version:
            return
        item_ids, campaign_ids = self._ids_fn()
        ids = (tuple(sorted(set(item_ids))), tuple(sorted(set(campaign_ids))))
        if ids != self._sent_ids:
            with self._send_lock:
                self._conn.send_bytes(pickle.dumps(("ids", *ids), protocol=pickle.HIGHEST_PROTOCOL))
            self._sent_ids = ids
        self._sent_version = version

    def _watch_ids(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._send_ids()
            except (OSError, EOFError):
                return
            except Exception as exc:  # noqa: BLE001 - the snapshot may be briefly unreadable
                log.debug("item ids unavailable: %s", exc)

    def _apply(self) -> None:
        """Apply the hub's slices of changed rows as they arrive (``None`` = row gone)."""
        while True:
            try:
                data = self._conn.recv_bytes()
            except (EOFError, OSError):
                if not self._stop.is_set():
                    self.failures += 1
                    self.last_error = "the item-statistics refresher is gone"
                    log.error("the item-statistics refresher is gone; serving the last statistics until restart")
                return
            kind, *rest = pickle.loads(data)
            if kind == "rows":
                view, rows = rest
                target = self._rows[view]
                with self._columns_lock:
                    for key, row in rows:
                        if row is None:
                            target.pop(key, None)
                        else:
                            target[key] = row
                        for columns in self._columns:
                            columns.set(view, key, row)
                time.sleep(0)                            # let request threads in between slices
            elif kind == "done":
                self.refreshes += 1
                self.last_refresh_s = rest[0]
            elif kind == "error":
                self.failures += 1
                self.last_error = rest[0]
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("item feature refresh failed (%d times; keeping the last values): %s",
                                self.failures, rest[0])

    def stop(self, timeout: float = 5.0) -> None:
        if self._conn is None:
            return
        import socket

        self._stop.set()
        try:   # wake the reading thread with an end of stream (closing under it is a race)
            with socket.socket(fileno=os.dup(self._conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout)
        self._conn.close()
        self._conn = None
        if self._own_hub is not None:
            self._own_hub.stop(timeout)
            self._own_hub = None


# -- the hub process --------------------------------------------------------------------

class _Hub:
    """The hub's state: subscribers, the ids they need, the rows last sent (pure bookkeeping
    around ``ItemStatsReader``; the loop in ``_hub_main`` does the waiting)."""

    def __init__(self, open_reader: Callable[[], ItemStatsReader], slice_rows: int) -> None:
        self._open_reader = open_reader
        self._reader: ItemStatsReader | None = None
        self._slice_rows = slice_rows
        self.subscribers: dict[object, tuple[tuple, tuple]] = {}
        self.ids: tuple[tuple, tuple] = ((), ())
        self.rows: dict[str, dict[str, dict]] = {"item": {}, "campaign": {}}
        self.refreshed = False
        self.last_refresh_s = 0.0

    def add(self, conn) -> None:
        """A new subscriber gets every row held now (then only changes)."""
        self.subscribers[conn] = ((), ())
        if self.refreshed:
            self._send(conn, [(view, list(rows.items())) for view, rows in self.rows.items()])

    def drop(self, conn) -> None:
        """Forget a subscriber that left (its ids leave the union; no read is needed for that)."""
        self.subscribers.pop(conn, None)
        try:
            conn.close()
        except OSError:
            pass
        self._update_ids()

    def set_ids(self, conn, item_ids: tuple, campaign_ids: tuple) -> bool:
        """Record a subscriber's ids; True when the union the hub reads changed."""
        self.subscribers[conn] = (item_ids, campaign_ids)
        return self._update_ids()

    def _update_ids(self) -> bool:
        wanted = list(self.subscribers.values())
        if len(wanted) == 1:
            ids = wanted[0]
        else:   # the processes' snapshots may differ for a moment: read what any of them needs
            ids = tuple(tuple(sorted(set().union(*(w[k] for w in wanted)))) for k in (0, 1)) if wanted else ((), ())
        if ids == self.ids:
            return False
        self.ids = ids
        return True

    def open(self) -> None:
        """Open the reader (Feast and the incremental tables) if it is not open: not timed, so
        the set-up never stretches the interval between reads."""
        if self._reader is None:
            reader = self._open_reader()
            for kind in ("item", "campaign"):
                reader.prepare(kind)
            self._reader = reader

    def refresh(self) -> None:
        """Read the wanted rows that may have changed (``ItemStatsReader.changes``) and send
        each subscriber what did."""
        self.open()
        elapsed = 0.0
        changes: list[tuple[str, list]] = []
        try:
            for view, ids in zip(("item", "campaign"), self.ids):
                started = time.perf_counter()
                read = self._reader.changes(view, ids)
                elapsed += time.perf_counter() - started
                changes.append((view, self._apply(view, read)))
        finally:   # the campaign read failed after the item read: the item changes still go out (the reader moved on)
            self.last_refresh_s = elapsed
            if changes:
                self.refreshed = True
                for conn in list(self.subscribers):
                    self._send(conn, changes)

    def _apply(self, view: str, read: StatsRead) -> list[tuple[str, dict | None]]:
        """Update the rows held with one read; return the ``(id, row or None: gone)`` that changed."""
        old = self.rows[view]
        if read.full:
            changed = [(k, v) for k, v in read.rows.items() if old.get(k) != v]
            changed += [(k, None) for k in old if k not in read.rows]
            self.rows[view] = read.rows
            return changed
        changed = [(k, v or None) for k, v in read.rows.items() if old.get(k) != (v or None)]
        for k, v in changed:
            if v is None:
                old.pop(k, None)
            else:
                old[k] = v
        return changed

    def fail(self, message: str) -> None:
        for conn in list(self.subscribers):
            self._send_raw(conn, pickle.dumps(("error", message)))

    def _send(self, conn, changes: list[tuple[str, list]]) -> None:
        for view, changed in changes:
            for i in range(0, len(changed), self._slice_rows):
                blob = pickle.dumps(("rows", view, changed[i:i + self._slice_rows]), protocol=pickle.HIGHEST_PROTOCOL)
                if not self._send_raw(conn, blob):
                    return
        self._send_raw(conn, pickle.dumps(("done", self.last_refresh_s)))

    def _send_raw(self, conn, blob: bytes) -> bool:
        try:
            conn.send_bytes(blob)
            return True
        except (OSError, EOFError, BrokenPipeError):
            self.drop(conn)
            return False


def _hub_main() -> None:
    """Entry of the hub process: config on stdin (then stdin is the lifeline), "ready" on stdout."""
    import gc
    import signal
    import socket
    from multiprocessing.connection import Listener, wait

    signal.signal(signal.SIGINT, signal.SIG_IGN)          # the owner decides when to stop
    stdin = sys.stdin.buffer
    size = int.from_bytes(stdin.read(8), "big")
    settings, refresh_s, slice_rows, address = pickle.loads(stdin.read(size))
    listener = Listener(address, family="AF_UNIX", backlog=64)
    wake_r, wake_w = socket.socketpair()
    pending: list = []
    lock = threading.Lock()

    def accept() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            with lock:
                pending.append(conn)
            wake_w.send(b"x")

    threading.Thread(target=accept, name="item-stats-accept", daemon=True).start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    os.dup2(2, 1)                                         # stray prints go to the log

    def open_reader() -> ItemStatsReader:
        from features import open_store

        return ItemStatsReader(open_store(settings))

    hub = _Hub(open_reader, slice_rows)
    gc.disable()   # importing Feast leaves ~400k long-lived objects: no full collections over them meanwhile
    try:   # open Feast now, while the servers start (importing it takes ~8 s here, far more under load)
        hub.open()
    except Exception as exc:  # noqa: BLE001 - the first refresh retries and reports it to the subscribers
        log.warning("item-statistics refresher could not open the feature store yet: %s", exc)
    finally:
        gc.enable()
    gc.collect()
    gc.freeze()
    lifeline = stdin.fileno()
    niced = False
    due = time.monotonic()
    while True:
        timeout = max(0.0, due - time.monotonic()) if any(hub.ids) else None
        for ready in wait([lifeline, wake_r, *hub.subscribers], timeout):
            if ready == lifeline:
                if not os.read(lifeline, 4096):
                    listener.close()
                    return
            elif ready is wake_r:
                wake_r.recv(4096)
                with lock:
                    new, pending[:] = list(pending), []
                for conn in new:
                    hub.add(conn)
            else:
                try:
                    data = ready.recv_bytes()
                except (EOFError, OSError):
                    hub.drop(ready)
                    continue
                _, item_ids, campaign_ids = pickle.loads(data)
                if hub.set_ids(ready, item_ids, campaign_ids):
                    due = time.monotonic()               # new ids: read them now
        if not any(hub.ids) or time.monotonic() < due:
            continue
        try:
            hub.refresh()
            if not niced:   # start-up (importing Feast, the first full read) at normal priority: niced
                os.nice(_NICE)      # from the start, servers starting beside it starved it for minutes
                niced = True
            due = time.monotonic() + max(refresh_s, 10 * hub.last_refresh_s)   # never more than ~10 % of a core
        except Exception as exc:  # noqa: BLE001 - report, keep the last values, retry
            hub.fail(f"{type(exc).__name__}: {exc}")
            due = time.monotonic() + refresh_s
