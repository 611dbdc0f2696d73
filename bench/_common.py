"""Shared plumbing for benchmarks: the result object, its file, progress on stderr."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    return {"cores": os.cpu_count(), "platform": sys.platform}


def median(values) -> float:
    return float(statistics.median(values))


def emit(name: str, figures: dict, quick: bool) -> dict:
    """Print the result as the last stdout line and write bench/results/<name>.json."""
    result = {**figures, "machine": machine(), "quick": quick}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result
