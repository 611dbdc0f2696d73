"""Entities, push sources and feature views of the Sightline Feast repo.

Every view is fed by a push source (the streaming stage pushes computed windows) whose
batch source is a directory of parquet part files in the offline directory (one file
per pushed batch, written by ``features.write_offline``: Feast's own offline push
rewrites the whole file each time); that directory is what point-in-time joins read. TTLs bound how stale a value may be served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

TIMESTAMP_FIELD = "event_timestamp"


@dataclass(frozen=True)
class ViewSpec:
    """Plain description of one feature view, usable without importing feast."""

    name: str
    entity: str               # join key column
    fields: tuple[tuple[str, str], ...]  # (name, feast type name)
    ttl: timedelta
    user_keyed: bool          # erased with the user; never written without personalization consent

    @property
    def push_source(self) -> str:
        return f"{self.name}_push"

    @property
    def feature_names(self) -> list[str]:
        return [name for name, _ in self.fields]


_COUNTS = lambda *windows, kinds=("impressions", "clicks"): tuple(  # noqa: E731
    (f"{kind}_{w}", "Int64") for w in windows for kind in kinds
)

_ENGAGED = tuple(
    (f"engaged_category_{kind}_{w}", "Array(Int64)") for w in ("1h", "24h", "7d") for kind in ("impressions", "clicks")
)

# Field semantics (computed by streaming/_windows.py; docs/streaming.md has the details):
# a window "w" at an entity's row timestamp T (its latest event) covers the one-minute
# buckets in (minute(T) - w, minute(T)]; list features are aligned arrays, most recent first.
VIEWS: tuple[ViewSpec, ...] = (
    ViewSpec(
        "user_context", "user_id",
        (("recent_scenes", "Array(String)"), ("recent_scene_counts_24h", "Array(Int64)"),
         ("recent_objects", "Array(String)"), ("recent_object_counts_24h", "Array(Int64)"),
         ("recent_intent_categories", "Array(String)"), ("recent_intent_category_counts_24h", "Array(Int64)"),
         ("context_events_1h", "Int64"), ("context_events_24h", "Int64")),
        timedelta(days=1), user_keyed=True,
    ),
    ViewSpec(
        "user_engagement", "user_id",
        _COUNTS("1h", "24h", "7d")
        + (("engaged_categories_7d", "Array(String)"),)
        + _ENGAGED,
        timedelta(days=7), user_keyed=True,
    ),
    ViewSpec(
        "item_stats", "item_id",
        _COUNTS("1h", "24h", kinds=("impressions", "clicks", "conversions"))
        + (("ctr_1h", "Float64"), ("ctr_24h", "Float64")),
        timedelta(days=2), user_keyed=False,
    ),
    ViewSpec(
        "campaign_stats", "campaign_id",
        _COUNTS("1h", "24h", kinds=("impressions", "clicks", "conversions"))
        + (("ctr_1h", "Float64"), ("ctr_24h", "Float64"), ("spend_1h", "Float64"), ("spend_24h", "Float64")),
        timedelta(days=2), user_keyed=False,
    ),
    ViewSpec(
        "context_popularity", "context_key",
        (("events_1h", "Int64"), ("events_24h", "Int64"), ("impressions_24h", "Int64"),
         ("clicks_24h", "Int64"), ("ctr_24h", "Float64")),
        timedelta(days=2), user_keyed=False,
    ),
)

VIEWS_BY_NAME = {v.name: v for v in VIEWS}


def _feast_type(name: str):
    from feast import types

    if name.startswith("Array("):
        return types.Array(getattr(types, name[6:-1]))
    return getattr(types, name)


def build_definitions(offline_dir: Path) -> list:
    """Feast objects for ``FeatureStore.apply``; parquet batch sources live in ``offline_dir``."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType

    entities = {
        key: Entity(name=key.removesuffix("_id").removesuffix("_key"), join_keys=[key], value_type=ValueType.STRING)
        for key in {v.entity for v in VIEWS}
    }
    objects: list = list(entities.values())
    for view in VIEWS:
        batch = FileSource(
            name=f"{view.name}_offline",
            path=str((offline_dir / view.name).resolve()),
            timestamp_field=TIMESTAMP_FIELD,
        )
        push = PushSource(name=view.push_source, batch_source=batch)
        objects += [
            push,
            FeatureView(
                name=view.name,
                entities=[entities[view.entity]],
                ttl=view.ttl,
                schema=[Field(name=n, dtype=_feast_type(t)) for n, t in view.fields],
                source=push,
                online=True,
                tags={"user_keyed": str(view.user_keyed).lower()},
            ),
        ]
    return objects


def arrow_schema(view: ViewSpec):
    """The pyarrow schema of a view's offline parquet files (entity, timestamp, features)."""
    import pyarrow as pa

    def arrow_type(name: str):
        if name.startswith("Array("):
            return pa.list_(arrow_type(name[6:-1]))
        return {"String": pa.string(), "Int64": pa.int64(), "Float64": pa.float64(),
                "Float32": pa.float32(), "Int32": pa.int32(), "Bool": pa.bool_()}[name]

    return pa.schema(
        [(view.entity, pa.string()), (TIMESTAMP_FIELD, pa.timestamp("us", tz="UTC"))]
        + [(n, arrow_type(t)) for n, t in view.fields]
    )
