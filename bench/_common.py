"""Shared plumbing for benchmarks: the result object, its file, progress on stderr."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine() -> dict:
    return {"cores": os.cpu_count(), "platform": sys.platform}


def median(values) -> float:
    return float(statistics.median(values))


def result_path(name: str, quick: bool, results_dir: Path = RESULTS) -> Path:
    """Where a benchmark's result lives: a quick run has a file of its own.

    A ``--quick`` run (fewer steps, often on a busy machine) must not replace the full
    run that bench/README.md quotes.
    """
    return results_dir / (f"{name}.quick.json" if quick else f"{name}.json")


def emit(name: str, figures: dict, quick: bool, results_dir: Path = RESULTS) -> dict:
    """Print the result as the last stdout line and write it to ``result_path``."""
    result = {**figures, "machine": machine(), "quick": quick,
              "measured_at": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    path = result_path(name, quick, results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    progress(f"result written to {path}")
    return result
