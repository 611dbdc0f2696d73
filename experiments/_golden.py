"""The versioned golden cases that pin assignment (shared by serving tests and analysis).

``golden_cases.json`` holds raw hash values and (experiments, unit) → expected arms.
If a code change alters any of them, every running experiment would reshuffle its
units: the tests fail, and the analysis refuses to trust its re-computed assignments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from experiments._assign import HASH_VERSION, assign, unit_hash
from experiments._definitions import parse_experiment
from experiments.errors import ExperimentValidationError

GOLDEN_CASES_PATH = Path(__file__).with_name("golden_cases.json")


@dataclass(frozen=True)
class GoldenCheck:
    version: int
    cases: int
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def load_golden_cases(path: Path | None = None) -> dict:
    data = json.loads(Path(path or GOLDEN_CASES_PATH).read_text())
    if data.get("hash_version") != HASH_VERSION:
        raise ExperimentValidationError(
            f"golden cases are for hash version {data.get('hash_version')}, code is {HASH_VERSION}; "
            "a new hash version needs new experiments (never reshuffle running ones)")
    return data


def check_golden_cases(path: Path | None = None) -> GoldenCheck:
    """Re-run every golden case through this code; mismatches say what differs."""
    data = load_golden_cases(path)
    mismatches: list[str] = []
    for case in data["hashes"]:
        got = unit_hash(case["salt"], case["unit_id"])
        if got != case["hash"]:
            mismatches.append(f"unit_hash({case['salt']!r}, {case['unit_id']!r}) = {got!r}, expected {case['hash']!r}")
    experiments = [parse_experiment(e) for e in data["experiments"]]
    for case in data["cases"]:
        got = {a.experiment_id: a.arm for a in assign(experiments, case["unit_id"], case["unit_type"])}
        if got != case["expected"]:
            mismatches.append(f"assign({case['unit_id']!r}, {case['unit_type']!r}) = {got}, expected {case['expected']}")
    return GoldenCheck(data["version"], len(data["hashes"]) + len(data["cases"]), tuple(mismatches))
