"""Feature access for serving: the per-request read of a user's online rows.

One Feast read of one entity costs ~0.3 ms, of 250 entities ~14 ms: so the user's rows
are read per request (only with personalization consent), while item and campaign
statistics for the whole snapshot are read in the background by ``serving._item_stats``
(which reads through ``_ViewRead`` too). A failing user read opens a short circuit (no
reads for ``cooldown_s``) so a down store costs one failure, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger(__name__)

USER_VIEWS: tuple[tuple[str, str], ...] = (("user_context", "user"), ("user_engagement", "user"))


def _feature_refs(view_name: str) -> list[str]:
    from features import VIEWS_BY_NAME

    return [f"{view_name}:{n}" for n in VIEWS_BY_NAME[view_name].feature_names]


class UserFeatures:
    """Reads a user's online rows (``user_context`` + ``user_engagement``) from Feast.

    ``get(user_key)`` returns ``{"user_<field>": value}`` with only the non-null fields,
    ``{}`` when the user has no rows, and raises when the store fails (the caller falls
    back and counts it). ``store_factory`` opens the Feast store lazily (import ~3 s).

    The read goes to the store's provider (``Provider.online_read``, one call per view,
    whatever the online store: SQLite here, Redis in prod) with the views and the value
    types resolved once at ``warm``. ``FeatureStore.get_online_features`` answers the same
    (a test pins it) but re-resolves the feature references against the registry, builds a
    response protobuf and converts it back on every call: in-process that was ~13 % of a
    Recommend's CPU, on the interpreter every request thread shares.
    """

    def __init__(self, store_factory: Callable[[], object], *, cooldown_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._factory = store_factory
        self._store = None
        self._refs: list[str] | None = None
        self._reads: list[tuple] = []
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._open_until = 0.0
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Open the store now (at start-up, not on the first request)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    store = self._factory()
                    self._reads = [_ViewRead.of(store, view, entity) for view, entity in USER_VIEWS]
                    self._refs = [r for view, _ in USER_VIEWS for r in _feature_refs(view)]
                    self._store = store

    @property
    def circuit_open(self) -> bool:
        return self._clock() < self._open_until

    def get(self, user_key: str) -> dict:
        if self.circuit_open:
            raise ConnectionError("feature store circuit open after a recent failure")
        try:
            self.warm()
            out: dict = {}
            for read in self._reads:
                read.into(out, user_key, "user_")
            return out
        except Exception:
            self._open_until = self._clock() + self._cooldown_s
            raise

    def get_via_feature_store(self, user_key: str) -> dict:
        """The same answer through ``FeatureStore.get_online_features`` (the reference ``get``
        is checked against; not used on the request path)."""
        self.warm()
        data = self._store.get_online_features(features=self._refs, entity_rows=[{"user_id": user_key}]).to_dict()
        return {f"user_{k}": v[0] for k, v in data.items() if k != "user_id" and v and v[0] is not None}


class _ViewRead:
    """One feature view's online read for one entity, resolved once: the provider, the
    ``FeatureView``, its feature names and their value types."""

    def __init__(self, store, provider, view, join_key: str) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value
        from feast.type_map import feast_value_type_to_python_type

        self._config = store.config
        self._provider = provider
        self._view = view
        self._names = [f.name for f in view.features]
        self._types = {f.name: f.dtype.to_value_type() for f in view.features}
        self._join_key = join_key
        self._entity_key, self._value = EntityKey, Value
        self._to_python = feast_value_type_to_python_type

    @classmethod
    def of(cls, store, view_name: str, entity: str) -> "_ViewRead":
        return cls(store, store._get_provider(), store.get_feature_view(view_name), store.get_entity(entity).join_key)

    def key(self, entity: str):
        """The ``EntityKey`` of one entity of this view."""
        return self._entity_key(join_keys=[self._join_key], entity_values=[self._value(string_val=entity)])

    def into(self, out: dict, entity: str, prefix: str) -> None:
        """Add ``prefix + name → value`` for the entity's non-null features to ``out``."""
        ((_, values),) = self._provider.online_read(config=self._config, table=self._view, entity_keys=[self.key(entity)],
                                                    requested_features=self._names)
        if values:
            self._convert(out, values, prefix)

    def many(self, keys: list, prefix: str) -> list[dict]:
        """One read of many entities (keys from ``key``): a ``{prefix + name: value}`` per key."""
        out = []
        for _, values in self._provider.online_read(config=self._config, table=self._view, entity_keys=keys,
                                                    requested_features=self._names):
            row: dict = {}
            if values:
                self._convert(row, values, prefix)
            out.append(row)
        return out

    def _convert(self, out: dict, values: dict, prefix: str) -> None:
        types, to_python = self._types, self._to_python
        for name in self._names:
            value = values.get(name)
            if value is not None:
                py = to_python(value, types[name])
                if py is not None:
                    out[prefix + name] = py
