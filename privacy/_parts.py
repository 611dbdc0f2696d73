"""Removing rows from parquet part-file directories, one atomic file replace at a time.

Both the Feast offline store (``features.write_offline``) and the event logs
(``features.append_events``) are directories of immutable ``part-*.parquet`` files.
To delete rows, each affected file is rewritten without them to a temporary name and
renamed over the original (``os.replace`` is atomic on POSIX), so a reader sees the old
file or the new one, never half of one; a file left empty is deleted. Only the columns
the predicate needs are read to decide, so unaffected files cost one column read.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Predicate = Callable[[object], object]
"""pyarrow Table (the ``columns`` only) → boolean pyarrow array: True marks a row to remove."""


@dataclass
class PartsResult:
    directory: Path
    files_scanned: int = 0
    files_rewritten: int = 0
    files_deleted: int = 0
    rows_removed: int = 0


def part_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob("part-*.parquet")) if Path(directory).is_dir() else []


def remove_rows(directory: Path, columns: list[str], predicate: Predicate, *, keep_empty: bool = False,
                dry_run: bool = False, threads: int = 4) -> PartsResult:
    """Rewrite every part file in ``directory`` without the rows ``predicate`` marks.

    The probe (read ``columns``, evaluate ``predicate``) runs on ``threads`` threads —
    pyarrow releases the GIL while reading — and only the files with marked rows are
    read whole and rewritten.
    """
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def probe(path: Path):
        try:
            table = pq.read_table(path, columns=columns)
        except (KeyError, ValueError, OSError):
            return path, None  # not a file of this shape, or gone meanwhile: the predicate cannot apply
        if table.num_rows == 0:
            return path, None
        mask = pc.fill_null(predicate(table), False)
        return path, (mask if pc.any(mask).as_py() else None)

    result = PartsResult(Path(directory))
    paths = part_files(directory)
    result.files_scanned = len(paths)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        hits = [(p, m) for p, m in pool.map(probe, paths) if m is not None]
    for path, mask in hits:
        n = int(pc.sum(mask).as_py() or 0)
        result.rows_removed += n
        if dry_run:
            continue
        table = pq.read_table(path)
        kept = table.filter(pc.invert(mask))
        if kept.num_rows == 0 and not keep_empty:
            path.unlink()
            result.files_deleted += 1
            continue
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        pq.write_table(kept, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        result.files_rewritten += 1
    return result
