"""The benchmark's Go open-loop client (``bench/loadgen``, built into ``.tools/sightline-loadgen``
by ``make install``) against a real echo RecommendationService on 127.0.0.1: ``build_server``
with API-key auth, as ``python -m bench.serve`` runs its echo baseline."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from bench.serve import LOADGEN, OPENLOOP_CHANNELS, _openloop
from proto import serving_pb2

pytestmark = pytest.mark.integration

RATE, SECONDS, CHANNELS = 50, 1.0, 4


def _loadgen() -> str:
    if not LOADGEN.exists():
        pytest.fail(f"{LOADGEN} is missing: install Go 1.26+ (https://go.dev/dl/) and run 'make install' "
                    "(scripts/install.sh builds bench/loadgen when go is on PATH)")
    sources = list((LOADGEN.parents[1] / "bench" / "loadgen").glob("*.go"))
    stale = [p.name for p in sources if p.stat().st_mtime > LOADGEN.stat().st_mtime]
    if stale:
        pytest.fail(f"{LOADGEN} is older than bench/loadgen/{', '.join(stale)}: run 'make install' to rebuild it")
    return str(LOADGEN)


@pytest.fixture
def echo(make_settings):
    """A real echo server with API-key auth; yields (port, key)."""
    from serving import ApiKeyStore, build_server, echo_service

    settings = make_settings(serving={"port": 0})
    keys = ApiKeyStore.from_settings(settings)
    key = keys.create_key("loadgen-test", ["recommend"], rate_per_s=1e6, burst=1_000_000)
    server = build_server(settings, [echo_service()], keys, host="127.0.0.1", port=0).start()
    yield server.port, key
    server.stop(1)
    keys.close()


@pytest.fixture
def requests_file(tmp_path) -> Path:
    path = tmp_path / "requests.bin"
    with open(path, "wb") as f:
        for i in range(7):
            blob = serving_pb2.RecommendRequest(request_id=f"r{i}", app_id="loadgen-test",
                                                surfaces=serving_pb2.Surfaces(ad_slots=3, suggestions=10)).SerializeToString()
            f.write(struct.pack(">I", len(blob)) + blob)
    return path


def _run(port: int, key: str, requests_file: Path, tmp_path: Path, *extra: str):
    out = tmp_path / "samples.json"
    cmd = [_loadgen(), "-target", f"127.0.0.1:{port}", "-requests", str(requests_file), "-key", key,
           "-rate", str(RATE), "-seconds", str(SECONDS), "-channels", str(CHANNELS), "-out", str(out), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())["samples"], done.stderr


def _assert_schedule(samples) -> None:
    assert abs(len(samples) - RATE * SECONDS) <= 1, len(samples)
    starts = [s[0] for s in samples]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert all(abs(g - 1 / RATE) < 1e-4 for g in gaps), gaps      # due times, exactly 1/rate apart


def test_open_loop_samples_against_a_real_server(echo, requests_file, tmp_path):
    port, key = echo
    samples, stderr = _run(port, key, requests_file, tmp_path)
    _assert_schedule(samples)
    assert all(isinstance(s[0], float) and isinstance(s[1], float) and s[2] is True for s in samples), samples
    assert all(0 < s[1] < 2000 for s in samples)
    assert f"sent {len(samples)}, ok {len(samples)}, errors: none" in stderr


def test_a_wrong_key_makes_every_call_unauthenticated(echo, requests_file, tmp_path):
    port, _ = echo
    samples, stderr = _run(port, "slk_nope_x", requests_file, tmp_path)
    _assert_schedule(samples)
    assert not any(s[2] for s in samples)
    assert f"ok 0, errors: Unauthenticated {len(samples)}" in stderr


def test_bench_serve_uses_it_with_the_same_sample_format(echo, requests_file):
    _loadgen()
    port, key = echo
    samples = _openloop(port, RATE, SECONDS, requests_file, key, client="go")
    assert len(samples) == RATE * SECONDS and all(s[2] for s in samples)     # over OPENLOOP_CHANNELS connections
    assert OPENLOOP_CHANNELS == 64 and all(len(s) == 3 for s in samples)


def test_the_python_fallback_writes_the_same_samples(echo, requests_file):
    port, key = echo
    samples = _openloop(port, RATE, SECONDS, requests_file, key, client="python")
    assert len(samples) == RATE * SECONDS and all(s[2] and s[1] > 0 for s in samples)
    assert all(len(s) == 3 and isinstance(s[0], float) for s in samples)


def test_clear_failures(requests_file, tmp_path):
    import socket

    with socket.socket() as s:        # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = [_loadgen(), "-requests", str(requests_file), "-rate", "10", "-seconds", "1", "-out", str(tmp_path / "o")]
    down = subprocess.run([*base, "-target", f"127.0.0.1:{port}", "-connect-timeout", "0.5"],
                          capture_output=True, text=True, timeout=30)
    assert down.returncode != 0 and f"is the server running on 127.0.0.1:{port}?" in down.stderr
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    no_requests = subprocess.run([*base, "-target", f"127.0.0.1:{port}", "-requests", str(empty)],
                                 capture_output=True, text=True, timeout=30)
    assert no_requests.returncode != 0 and "holds no requests" in no_requests.stderr
    bad_flag = subprocess.run([*base, "-target", f"127.0.0.1:{port}", "-rate", "0"],
                              capture_output=True, text=True, timeout=30)
    assert bad_flag.returncode != 0 and "-rate must be > 0" in bad_flag.stderr
