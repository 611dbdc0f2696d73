"""Fast appends to the offline store: one parquet part file per batch per view.

Part files are named ``part-<epoch_ms>-<uuid>.parquet`` and written to a temporary
name first, then renamed, so a reader never sees half a file and a crash leaves no
partial part behind.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from features._definitions import VIEWS, VIEWS_BY_NAME, arrow_schema


def offline_dir(feast_dir: Path, view: str) -> Path:
    return feast_dir / "data" / view


def seed_offline(feast_dir: Path) -> None:
    """Give every view an empty, correctly typed part file so Feast can read the schema."""
    import pyarrow.parquet as pq

    for view in VIEWS:
        directory = offline_dir(feast_dir, view.name)
        directory.mkdir(parents=True, exist_ok=True)
        seed = directory / "part-0-schema.parquet"
        if not seed.exists():
            pq.write_table(arrow_schema(view).empty_table(), seed)


def append_part(directory: Path, table, schema) -> Path | None:
    """Write ``table`` (pyarrow, polars or pandas) cast to ``schema`` as one new part file
    in ``directory``: temp name, then an atomic rename. None when there are no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not isinstance(table, pa.Table):
        table = table.to_arrow() if hasattr(table, "to_arrow") else pa.Table.from_pandas(table, preserve_index=False)
    if table.num_rows == 0:
        return None
    table = table.select(schema.names).cast(schema)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"part-{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}.parquet"
    tmp = directory / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, directory / name)
    return directory / name


def write_offline(feast_dir: Path, view: str, table) -> Path | None:
    """Append ``table`` (pyarrow Table, polars or pandas DataFrame) as a new part file."""
    return append_part(offline_dir(feast_dir, view), table, arrow_schema(VIEWS_BY_NAME[view]))
