"""`sightline serve keys ...` and `sightline serve` as an operator runs them."""

from __future__ import annotations

import signal

import grpc
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.integration


def test_keys_create_list_revoke(tmp_path):
    from sightline.cli import main

    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "serve", "keys"]
    created = runner.invoke(main, base + ["create", "--owner", "app-1", "--scope", "recommend", "--scope", "feedback"],
                            env={})
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip().splitlines()[-1]
    assert plaintext.startswith("slk_")
    listed = runner.invoke(main, base + ["list"], env={})
    key_id = plaintext.split("_")[1]
    assert key_id in listed.output and "app-1" in listed.output and plaintext not in listed.output
    assert runner.invoke(main, base + ["revoke", key_id], env={}).exit_code == 0
    assert key_id not in runner.invoke(main, base + ["list"], env={}).output
    assert "revoked" in runner.invoke(main, base + ["list", "--all"], env={}).output
    bad = runner.invoke(main, base + ["revoke", "nope"], env={})
    assert bad.exit_code != 0 and "keys list" in bad.output


@pytest.mark.parametrize("args, runtime", [([], "asyncio"), (["--runtime", "threads"], "threads")])
def test_serve_runs_answers_health_and_stops_cleanly(kafka_settings, serving_kit, args, runtime):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc, found = serving_kit.start_cli_server(kafka_settings, args, r"serving on (\S+) after [\d.]+ s of start-up \(\w+, (\w+) runtime",
                                               timeout_s=90)
    try:
        address = found.group(1)
        assert found.group(2) == runtime
        with grpc.insecure_channel(address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=60)[1]
    assert proc.returncode == 0, out
    assert "stopping" in out
