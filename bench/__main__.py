"""Run every benchmark and refresh the results table in bench/README.md.

Usage: python -m bench [--quick] [name ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Benchmark modules in the order they should run, with their headline keys.
BENCHMARKS: dict[str, tuple[str, ...]] = {
    "ingest": ("events_per_s", "freshness_p50_s", "freshness_p99_s"),
    "train": ("torchrec_samples_per_s", "baseline_samples_per_s", "speedup", "infer_250_p50_ms"),
    "quality": ("auc_torchrec", "auc_xgboost", "auc_bayes", "logloss_torchrec", "calibration_torchrec"),
    "serve": ("p50_ms", "p99_ms", "max_rps_p99_under_50ms", "echo_p50_ms", "ratio_p50_to_echo"),
    "pacing": ("max_overspend_pct", "max_underspend_pct", "pacing_rmse", "two_servers_shared_max_underspend_pct"),
    "experiments": ("aa_false_positive_rate", "ab_power_observed", "ab_power_predicted", "srm_flags_broken_split"),
    "hostile": (),
    "startup": ("imports_s", "imports_from_source_s", "ratio_source_to_bytecode", "server_ready_s"),
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _committed_at(path: Path) -> str | None:
    """When git last recorded ``path`` (results written before ``measured_at`` existed): a
    fresh clone's file times are the checkout's, not the measurement's."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%d %H:%M", "--", path.name],
                             cwd=path.parent, capture_output=True, text=True, timeout=10,
                             env={"TZ": "UTC", "PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def render_table(results_dir: Path) -> str:
    rows = ["| benchmark | quick | headline figures | measured |", "|---|---|---|---|"]
    for name, keys in BENCHMARKS.items():
        # the full run when there is one; a quick run only stands in until then
        path = next((p for p in (results_dir / f"{name}.json", results_dir / f"{name}.quick.json") if p.exists()),
                    results_dir / f"{name}.json")
        if not path.exists():
            rows.append(f"| `{name}` | – | not run yet (`python -m bench.{name}`) | – |")
            continue
        data = json.loads(path.read_text())
        shown = keys or tuple(k for k in data if k not in ("machine", "quick"))[:5]
        figures = ", ".join(f"{k} = {_fmt(data[k])}" for k in shown if k in data)
        when = data.get("measured_at") or _committed_at(path) or time.strftime(
            "%Y-%m-%d %H:%M", time.gmtime(path.stat().st_mtime))
        rows.append(f"| `{name}` | {data.get('quick')} | {figures} | {when} UTC |")
    return "\n".join(rows)


def refresh_readme(results_dir: Path = HERE / "results", readme: Path = HERE / "README.md") -> None:
    text = readme.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{readme} lost its {start} / {end} markers; put them back around the table")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{render_table(results_dir)}\n{end}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="run each benchmark's quick version")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    args = parser.parse_args(argv)
    names = args.names or [n for n in BENCHMARKS if (HERE / f"{n}.py").exists()]
    failed = []
    for name in names:
        print(f"[bench] {name}{' --quick' if args.quick else ''}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", f"bench.{name}"] + (["--quick"] if args.quick else [])
        if subprocess.run(cmd, cwd=HERE.parent).returncode != 0:
            failed.append(name)
    refresh_readme()
    print(f"[bench] table refreshed in {HERE / 'README.md'}", file=sys.stderr)
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
