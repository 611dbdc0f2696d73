"""The Feast feature store: repo definitions, per-profile store config, and access.

Views are described by plain ``ViewSpec``s (importable without feast); ``apply_repo``
registers them, ``open_store`` returns a ``feast.FeatureStore``.
"""

from features._definitions import TIMESTAMP_FIELD, VIEWS, VIEWS_BY_NAME, ViewSpec, arrow_schema, build_definitions
from features._eventlog import EVENT_KINDS, append_events, event_log_dir, event_log_schema, read_events
from features._offline import offline_dir, write_offline
from features._repo import FeatureRepoError, apply_repo, open_store, render_feature_store_yaml, write_repo

__all__ = [
    "TIMESTAMP_FIELD", "VIEWS", "VIEWS_BY_NAME", "ViewSpec", "arrow_schema", "build_definitions",
    "offline_dir", "write_offline",
    "EVENT_KINDS", "append_events", "event_log_dir", "event_log_schema", "read_events",
    "FeatureRepoError", "apply_repo", "open_store", "render_feature_store_yaml", "write_repo",
]
