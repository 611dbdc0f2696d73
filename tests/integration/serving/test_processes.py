"""Several server processes on one port (``serving.processes``): the kernel spreads
connections, the frequency caps hold across processes, and a stop drains every process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import grpc
import pytest

from proto import events_pb2, serving_pb2

pytestmark = pytest.mark.integration
CONNECTIONS = 16
"""Separate connections (one per channel): all 16 on one of 2 processes has odds 2^-15."""


def _request(user: str) -> serving_pb2.RecommendRequest:
    return serving_pb2.RecommendRequest(
        app_id="glasses-app", user_id=user,
        consent=events_pb2.Consent(context=True, personalization=True, measurement=True),
        context=events_pb2.Context(device=events_pb2.GLASSES, scene="park", objects=["running_shoe"],
                                   intent_text="I need running shoes", location_category="outdoors", region="DE-BE",
                                   local_hour=12, local_weekday=2),
        surfaces=serving_pb2.Surfaces(ad_slots=5, suggestions=3))


def _channels(address: str) -> list[grpc.Channel]:
    # a local subchannel pool per channel: each channel opens its own TCP connection
    chans = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(CONNECTIONS)]
    for c in chans:
        grpc.channel_ready_future(c).result(timeout=20)
    return chans


def test_two_processes_share_the_port_and_the_frequency_caps(kafka_settings, serving_kit):
    from features import apply_repo
    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, ServerGroup, sum_stats

    s = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(
        update={"port": 0, "processes": 2, "feature_refresh_s": 0.5, "snapshot_refresh_s": 0.5})})
    serving_kit.seed_world(s.campaign_db_url)    # c-shoes: frequency cap 1 a day
    apply_repo(s)
    keys = ApiKeyStore.from_settings(s)
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    group = ServerGroup(s).start()
    try:
        assert len(set(group.pids)) == 2 and all(p != os.getpid() for p in group.pids)
        hub = group.item_stats_pid
        assert hub is not None and hub not in group.pids, "the group runs one item-statistics refresher"
        assert not [p for p in group.pids if _children_running(p, "_item_stats")], \
            "a server process started a refresher of its own"
        chans = _channels(group.address)
        shoes = 0
        for i, ch in enumerate(chans):
            reply = serving_pb2_grpc.RecommendationServiceStub(ch).Recommend(_request("cap-across"), metadata=md,
                                                                              timeout=20)
            shoes += sum(1 for ad in reply.ads if ad.campaign_id == "c-shoes")
            assert reply.ads, f"request {i}: the other campaigns still serve"
        assert shoes == 1, (f"c-shoes (cap 1 a day) was served {shoes} times to one user over {CONNECTIONS} "
                            "connections to 2 processes: the caps are not shared")
        for c in chans:
            c.close()
    finally:
        stats = group.stop()
        keys.close()
    assert len(stats) == 2
    assert all(st.get("requests", 0) > 0 for st in stats), f"the kernel gave one process every connection: {stats}"
    total = sum_stats(stats)
    assert total["requests"] == CONNECTIONS and total["caps_store"] == "sqlite"
    assert total["events"]["sent"] > 0 and total["events"]["failed"] == 0, "each process flushed its event log"
    assert all(st["item_stats"]["shared"] and st["item_stats"]["refreshes"] >= 1 for st in stats), [st.get("item_stats") for st in stats]


def test_two_processes_pace_the_whole_budget_for_an_app_on_one_connection(kafka_settings, serving_kit):
    """One connection reaches one process. Each process used to pace 1/N of every budget, so
    a campaign could spend half its budget at most; now the processes meet in the campaign
    store's ledger and pace the whole budget together."""
    import time

    from campaigns import CampaignStore
    from features import apply_repo
    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, ServerGroup
    from serving._pacing import DAY_S

    # a reserve, so c-tiny (CPM, daily budget 0.2) alone in its auction pays 0.01 an impression
    s = kafka_settings.model_copy(update={"serving": kafka_settings.serving.model_copy(
        update={"port": 0, "processes": 2, "reserve_ecpm": 10.0, "pacing_flush_s": 0.2})})
    serving_kit.seed_world(s.campaign_db_url)
    apply_repo(s)
    keys = ApiKeyStore.from_settings(s)
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    group = ServerGroup(s).start()
    spent = 0.0
    try:
        with grpc.insecure_channel(group.address) as channel:
            stub = serving_pb2_grpc.RecommendationServiceStub(channel)
            for i in range(40):
                request = serving_pb2.RecommendRequest(
                    app_id="glasses-app", user_id=f"one-conn-{i}",
                    consent=events_pb2.Consent(context=True, personalization=True, measurement=True),
                    context=events_pb2.Context(device=events_pb2.GLASSES, scene="gym", location_category="indoors",
                                               region="DE-BE", local_hour=12, local_weekday=2),
                    surfaces=serving_pb2.Surfaces(ad_slots=1, suggestions=0))
                spent += sum(ad.price_charged for ad in stub.Recommend(request, metadata=md, timeout=20).ads
                             if ad.campaign_id == "c-tiny")
    finally:
        stats = group.stop()
        keys.close()
    assert sorted(st.get("requests", 0) for st in stats) == [0, 40], f"one connection, one process: {stats}"
    assert spent > 0.1 + 0.015, f"c-tiny spent {spent:.3f} of its 0.2 budget: one process still paces half of it"
    assert spent <= 0.2 * 1.02 + 1e-9, f"c-tiny spent {spent:.3f} of a 0.2 daily budget"
    store = CampaignStore.open(s.campaign_db_url)
    try:
        assert store.spend_on(int(time.time() // DAY_S))["c-tiny"] == pytest.approx(spent)
        writers = store.pacing_on(int(time.time() // DAY_S))["c-tiny"]
        assert len(writers) == 1 and next(iter(writers.values())).issued == pytest.approx(spent)
    finally:
        store.close()


def _children_running(pid: int, needle: str) -> list[int]:
    """Child processes of ``pid`` whose command line contains ``needle`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            cmd = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and needle in cmd:
            found.append(int(entry))
    return found


def test_in_process_caps_with_several_processes_are_refused(make_settings):
    from serving import ServerGroup
    from serving.errors import ServerConfigError

    s = make_settings(serving={"port": 0, "frequency_store": "memory"})
    with pytest.raises(ServerConfigError, match="shared frequency store"):
        ServerGroup(s, processes=2).start()


def test_sightline_serve_processes_runs_answers_and_stops(kafka_settings, serving_kit):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    proc, found = serving_kit.start_cli_server(kafka_settings, ["--processes", "2"],
                                               r"serving on (\S+) with 2 processes after [\d.]+ s of start-up \(pids (\d+), (\d+);.*API-key limits in file")
    try:
        address, pids = found.group(1), [int(found.group(2)), int(found.group(3))]
        chans = _channels(address)
        for c in chans:
            status = health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=90)[1]
    assert proc.returncode == 0, out
    assert "stopping" in out
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower(), \
            f"server process {pid} outlived sightline serve"


def test_a_group_without_item_statistics_starts_no_refresher(make_settings):
    """The benchmark's echo baseline reads no item statistics: its group must not start the
    refresher, whose start-up (importing Feast) took ~5 s of CPU beside the measured calls."""
    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, ServerGroup

    s = make_settings(serving={"port": 0, "processes": 2})
    keys = ApiKeyStore.from_settings(s)
    md = [("x-api-key", keys.create_key("app", ["recommend"]))]
    group = ServerGroup(s, factory="bench.serve:services_echo", item_stats=False).start()
    try:
        assert group.item_stats_pid is None
        assert not [p for p in group.pids if _children_running(p, "_item_stats")]
        with grpc.insecure_channel(group.address) as ch:
            reply = serving_pb2_grpc.RecommendationServiceStub(ch).Recommend(
                serving_pb2.RecommendRequest(request_id="r-1"), metadata=md, timeout=20)
        assert reply.request_id == "r-1"
    finally:
        group.stop()
        keys.close()


def test_a_keys_rate_limit_holds_for_the_machine_however_its_connections_spread(make_settings):
    """One bucket file for the group: an app on one connection gets its whole burst (it got
    1/N of it before), and an app on many connections gets no more than it."""
    from proto import serving_pb2_grpc
    from serving import ApiKeyStore, ServerGroup

    s = make_settings(serving={"port": 0, "processes": 2})
    keys = ApiKeyStore.from_settings(s)
    one = keys.create_key("one-connection", ["recommend"], rate_per_s=0.01, burst=6)
    many = keys.create_key("many-connections", ["recommend"], rate_per_s=0.01, burst=6)
    group = ServerGroup(s, factory="bench.serve:services_echo", item_stats=False).start()

    def answered(stub, key) -> int:
        try:
            stub.Recommend(serving_pb2.RecommendRequest(request_id="r"), metadata=[("x-api-key", key)], timeout=20)
            return 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert "rate limit" in exc.details()
            return 0

    try:
        with grpc.insecure_channel(group.address) as ch:
            stub = serving_pb2_grpc.RecommendationServiceStub(ch)
            assert sum(answered(stub, one) for _ in range(10)) == 6, "one connection gets the key's whole burst"
        chans = _channels(group.address)
        stubs = [serving_pb2_grpc.RecommendationServiceStub(c) for c in chans]
        assert sum(answered(stubs[i % len(stubs)], many) for i in range(2 * len(stubs))) == 6, \
            "calls spread over both processes get the burst once, not once per process"
        for c in chans:
            c.close()
    finally:
        stats = group.stop()
        keys.close()
    assert group._tmp is None, "the group removes its bucket file"
    assert len(stats) == 2
