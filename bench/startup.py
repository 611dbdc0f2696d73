"""Start-up cost: what every Python process of Sightline pays before it does any work.

- **imports**: ``python -c "import torchrec, feast"`` (what a server, a trainer or a
  streaming worker loads) with the shared virtualenv's bytecode, as ``make install`` leaves
  it, against the same imports compiled from source — ``PYTHONPYCACHEPREFIX`` at an empty
  directory and ``PYTHONDONTWRITEBYTECODE``, which is what every process paid before the
  install compiled the bytecode (uv writes no ``.pyc`` files, and where
  ``PYTHONDONTWRITEBYTECODE`` is set Python never does). Median of ``--repeats`` runs each,
  alternating, and the ratio.
- **server**: a Recommend server process (``python -m bench.serve --serve recommend --feast``,
  one process, the quick world: 10,000 products, 360 campaigns, a TorchRec model registered
  as production, Feast on SQLite; no Kafka) from its start to the port answering: imports,
  the catalog, the model, Feast and the first read of every item's statistics. Median of
  ``--repeats`` starts.

Usage: python -m bench.startup [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._common import emit, median, progress

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import torchrec, feast"


def _import_s(from_source: bool, scratch: Path) -> float:
    env = dict(os.environ)
    if from_source:
        env.update(PYTHONPYCACHEPREFIX=str(scratch), PYTHONDONTWRITEBYTECODE="1")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", IMPORTS], env=env, capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"'{IMPORTS}' failed: {done.stderr.strip()[-500:]}; run 'make install' first")
    return took


def _server_ready_s(data_dir: Path) -> float:
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    ready, stats = work / "port", work / "stats.json"
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "bench.serve", "--serve", "recommend", "--data-dir", str(data_dir),
                             "--ready-file", str(ready), "--stats-file", str(stats), "--processes", "1", "--feast"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not ready.exists() or not ready.read_text():
            if proc.poll() is not None:
                raise SystemExit(f"the server exited while starting (exit {proc.returncode}); run "
                                 f"'python -m bench.serve --quick' to see why")
            if time.perf_counter() - started > 600:
                raise SystemExit("the server did not start within 10 minutes")
            time.sleep(0.05)
        return time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats instead of 5 (~3 min)")
    parser.add_argument("--repeats", type=int, help="runs of each measurement (default 5, --quick 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1:
        parser.error("--repeats must be at least 1")

    scratch = Path(tempfile.mkdtemp(prefix="bench-startup-pycache-"))
    compiled, source = [], []
    for i in range(repeats):
        progress(f"imports {i + 1}/{repeats}: '{IMPORTS}' with the installed bytecode, then from source ...")
        compiled.append(_import_s(False, scratch))
        source.append(_import_s(True, scratch))
        progress(f"  {compiled[-1]:.2f} s with bytecode, {source[-1]:.2f} s from source")

    from bench.serve import _build

    progress("building the quick world, its online features and a TorchRec model for the server ...")
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-world-"))
    data_dir = tmp / "data"
    settings, _, _, world, personal_users = _build(data_dir, True, 1_000)
    from bench._world_features import write_world_features
    from features import apply_repo
    from models import Registry, train_and_register
    from models.testing import synthetic_impressions

    apply_repo(settings)
    write_world_features(settings, world, personal_users)
    train_and_register("torchrec", synthetic_impressions(20_000, n_items=500), Registry(settings), alias="production",
                       progress=False, work_dir=tmp / "model-work")
    ready = []
    for i in range(repeats):
        ready.append(_server_ready_s(data_dir))
        progress(f"server start {i + 1}/{repeats}: ready in {ready[-1]:.2f} s")

    figures = {
        "imports_s": round(median(compiled), 3), "imports_from_source_s": round(median(source), 3),
        "ratio_source_to_bytecode": round(median(source) / median(compiled), 2),
        "server_ready_s": round(median(ready), 3), "repeats": repeats,
        "imports": IMPORTS, "runs": {"imports_s": compiled, "imports_from_source_s": source, "server_ready_s": ready},
        "server": "python -m bench.serve --serve recommend --feast, 1 process, quick world (10k products, "
                  "360 campaigns), TorchRec registered as production, Feast on SQLite, no Kafka",
    }
    emit("startup", figures, args.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
