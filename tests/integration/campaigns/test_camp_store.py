"""The campaign store against SQLite and a real PostgreSQL server: CRUD, validation
through the store, audit log, versions, YAML import/export round trip, bulk load."""

from __future__ import annotations

import pytest

from campaigns import (
    AlreadyExists, Advertiser, Campaign, CampaignStore, Creative, NotFound, Product, ValidationError,
    apply_import, dump_yaml, export_document, load_yaml, plan_import,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def acme(store):
    return store.create_advertiser(Advertiser(id="acme", name="ACME Sports", currency="EUR"), actor="setup")


def _product(sku: str = "sku-1", **over) -> Product:
    doc = {"sku": sku, "title": "Trail shoe", "brand": "Acme", "category": "sports/running_shoes", "price": 89.9,
           "currency": "EUR", "availability": "in_stock", "landing_url": f"https://shop.example/p/{sku}"}
    doc.update(over)
    return Product.from_doc(doc)


def test_migrations_run_on_open_and_are_idempotent(store_url):
    import sqlalchemy as sa

    for _ in range(2):
        CampaignStore.open(store_url).close()
    from campaigns._schema import metadata

    engine = sa.create_engine(store_url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar() == "0004"
        inspector = sa.inspect(conn)
        names = set(inspector.get_table_names())
        migrated = {t: {c["name"] for c in inspector.get_columns(t)} for t in metadata.tables}
    engine.dispose()
    assert migrated == {t: {c.name for c in table.columns} for t, table in metadata.tables.items()}, \
        "the migrations build the tables campaigns/_schema.py describes"
    assert {"advertisers", "campaigns", "creatives", "products", "audit_log", "store_versions", "spend_ledger",
            "pacing_writers"} <= names


def test_a_cap_that_skips_uncounted_users_is_kept(store, acme, campaign_doc):
    created = store.create_campaign(Campaign.from_doc(campaign_doc()), actor="alice")
    assert not created.frequency_cap.skip_uncounted, "by default a cap's uncounted users are served"
    capped = store.update_campaign("c1", {"frequency_cap.per_day": 3, "frequency_cap.skip_uncounted": True},
                                   actor="bob")
    assert (capped.frequency_cap.per_day, capped.frequency_cap.skip_uncounted) == (3, True)
    assert store.get_campaign("c1").frequency_cap == capped.frequency_cap
    with pytest.raises(ValidationError, match="skip_uncounted"):
        store.update_campaign("c1", {"frequency_cap.per_day": None, "frequency_cap.per_week": None}, actor="bob")


def test_campaign_crud_and_audit(store, acme, campaign_doc):
    created = store.create_campaign(Campaign.from_doc(campaign_doc()), actor="alice")
    assert created.version == 1 and created.creatives[0].campaign_id == "c1"
    with pytest.raises(AlreadyExists):
        store.create_campaign(Campaign.from_doc(campaign_doc()), actor="alice")

    updated = store.update_campaign("c1", {"budget.daily": 80, "targeting.regions": ["DE", "AT"]}, actor="bob")
    assert updated.budget.daily == 80 and updated.targeting.regions == ("DE", "AT") and updated.version == 2
    assert store.pause("c1", actor="carol").status == "paused"
    assert store.resume("c1", actor="carol").status == "active"

    entries = store.audit_log(entity_type="campaign", entity_id="c1")
    assert [e.action for e in entries] == ["status:active", "status:paused", "update", "create"]
    assert [e.actor for e in entries] == ["carol", "carol", "bob", "alice"]
    upd = entries[2]
    assert upd.before["budget"]["daily"] == 100.0 and upd.after["budget"]["daily"] == 80.0
    assert upd.before["targeting"]["regions"] == ["DE"] and upd.after["targeting"]["regions"] == ["DE", "AT"]
    assert entries[3].before is None and entries[3].after["id"] == "c1"
    assert all(e.at.tzinfo is not None for e in entries)

    # a no-op update writes nothing
    store.update_campaign("c1", {"budget.daily": 80.0}, actor="dave")
    assert len(store.audit_log(entity_id="c1")) == 4

    store.archive("c1", actor="carol")
    with pytest.raises(ValidationError, match="archived"):
        store.resume("c1", actor="carol")


def test_invalid_changes_are_rejected_and_not_written(store, acme, campaign_doc):
    store.create_campaign(Campaign.from_doc(campaign_doc()), actor="alice")
    v_before = store.versions()
    with pytest.raises(ValidationError) as exc:
        store.update_campaign("c1", {"bid.amount": 500, "targeting.categories": ["politics/advocacy"]}, actor="x")
    assert set(exc.value.fields) == {"bid.amount", "targeting.categories"}
    with pytest.raises(ValidationError, match="an active campaign needs at least one active creative"):
        store.remove_creative("c1", "c1-cr1", actor="x")
    with pytest.raises(ValidationError, match="unknown field"):
        store.update_campaign("c1", {"budget.weekly": 5}, actor="x")
    with pytest.raises(ValidationError, match="advertiser 'nobody' does not exist"):
        store.create_campaign(Campaign.from_doc(campaign_doc("c2", advertiser_id="nobody")), actor="x")
    assert store.versions() == v_before
    assert store.get_campaign("c1").bid.amount == 0.8
    assert len(store.audit_log(entity_id="c1")) == 1


def test_optimistic_version_check(store, acme, campaign_doc):
    c = store.create_campaign(Campaign.from_doc(campaign_doc()), actor="a")
    store.update_campaign("c1", {"name": "renamed"}, actor="a", expected_version=c.version)
    with pytest.raises(AlreadyExists, match="changed meanwhile"):
        store.update_campaign("c1", {"name": "again"}, actor="b", expected_version=c.version)


def test_creatives(store, acme, campaign_doc):
    store.create_campaign(Campaign.from_doc(campaign_doc()), actor="a")
    c = store.add_creative("c1", Creative(id="c1-cr2", headline="New", landing_url="https://shop.example/2"), actor="a")
    assert [cr.id for cr in c.creatives] == ["c1-cr1", "c1-cr2"]
    with pytest.raises(ValidationError, match="https"):
        store.add_creative("c1", Creative(id="c1-cr3", headline="x", landing_url="http://x.example"), actor="a")
    c = store.update_creative("c1", "c1-cr2", {"status": "paused"}, actor="a")
    assert c.active_creatives()[0].id == "c1-cr1"
    c = store.remove_creative("c1", "c1-cr2", actor="a")
    assert len(c.creatives) == 1
    store.create_campaign(Campaign.from_doc(campaign_doc("c2", creatives=[])).model_copy(update={"status": "draft"}),
                          actor="a")
    with pytest.raises(AlreadyExists, match="belongs to campaign 'c1'"):
        store.add_creative("c2", Creative(id="c1-cr1", headline="dup", landing_url="https://x.example"), actor="a")


def test_listing_filters(store, acme, campaign_doc):
    store.create_advertiser(Advertiser(id="zeta", name="Zeta", currency="EUR"), actor="a")
    store.create_campaign(Campaign.from_doc(campaign_doc("c1")), actor="a")
    store.create_campaign(Campaign.from_doc(campaign_doc("c2", objective="conversions",
                                                         targeting={"categories": ["electronics"]})), actor="a")
    store.create_campaign(Campaign.from_doc(campaign_doc("c3", advertiser_id="zeta", status="draft")), actor="a")
    ids = lambda cs: [c.id for c in cs]  # noqa: E731
    assert ids(store.list_campaigns()) == ["c1", "c2", "c3"]
    assert ids(store.list_campaigns(advertiser_id="zeta")) == ["c3"]
    assert ids(store.list_campaigns(status="active")) == ["c1", "c2"]
    assert ids(store.list_campaigns(objective="conversions")) == ["c2"]
    assert ids(store.list_campaigns(category="electronics/laptops")) == ["c2"]
    assert ids(store.list_campaigns(limit=1, offset=1)) == ["c2"]
    assert ids(store.list_campaigns(name_contains="C3")) == ["c3"]
    with pytest.raises(NotFound, match="sightline campaigns list"):
        store.get_campaign("nope")


def test_products_upsert_and_audit(store):
    v0 = store.versions()
    assert store.upsert_products([_product("a"), _product("b")], actor="feed") == (2, 0)
    assert store.upsert_products([_product("a"), _product("b", price=79.0)], actor="feed") == (0, 1)
    assert store.versions()[1] == v0[1] + 2 and store.versions()[0] == v0[0]
    assert store.get_product("b").price == 79.0
    assert [p.sku for p in store.list_products(category="sports")] == ["a", "b"]
    entry = store.audit_log(entity_type="product", entity_id="b")[0]
    assert (entry.before["price"], entry.after["price"]) == (89.9, 79.0)
    with pytest.raises(ValidationError, match="sensitive"):
        store.upsert_products([_product("c", category="health/pharmacy")], actor="feed")
    store.delete_product("a", actor="feed")
    with pytest.raises(NotFound):
        store.get_product("a")


def test_yaml_round_trip_is_idempotent(store, acme, campaign_doc):
    doc = {
        "advertisers": [{"id": "acme", "name": "ACME Sports", "currency": "EUR"},
                        {"id": "zeta", "name": "Zeta", "currency": "EUR"}],
        "campaigns": [campaign_doc("c1"), campaign_doc("c2", advertiser_id="zeta", status="paused",
                                                       schedule={"start": "2026-11-01T00:00:00Z",
                                                                 "dayparting": [{"weekdays": [5, 6],
                                                                                 "start_hour": 9, "end_hour": 21}]})],
        "products": [_product("p1").to_doc(), _product("p2").to_doc()],
    }
    text = dump_yaml(_jsonable(doc))
    first = apply_import(store, load_yaml(text), actor="ci")
    assert first.applied and first.counts() == {"create": 5, "update": 0, "unchanged": 1}
    audit_n = len(store.audit_log(limit=1000))
    versions = store.versions()

    second = apply_import(store, load_yaml(text), actor="ci")
    assert not second.applied and second.counts() == {"create": 0, "update": 0, "unchanged": 6}
    assert store.versions() == versions and len(store.audit_log(limit=1000)) == audit_n

    exported = dump_yaml(export_document(store, include_products=True))
    third = plan_import(store, load_yaml(exported))
    assert third.pending == []
    assert load_yaml(exported)["campaigns"][1]["schedule"]["dayparting"][0]["weekdays"] == [5, 6]

    changed = exported.replace("daily: 100.0", "daily: 90.0", 1)
    plan = apply_import(store, load_yaml(changed), actor="ci", dry_run=True)
    assert [(c.kind, c.id, c.action) for c in plan.pending] == [("campaign", "c1", "update")]
    assert plan.pending[0].lines == ["~ budget.daily: 100.0 -> 90.0"]
    assert "~ campaign c1 (update)" in plan.render() and not plan.applied
    assert store.get_campaign("c1").budget.daily == 100.0
    apply_import(store, load_yaml(changed), actor="ci")
    assert store.get_campaign("c1").budget.daily == 90.0


def test_import_validates_everything_before_writing(store, campaign_doc):
    bad = {"advertisers": [{"id": "acme", "name": "ACME", "currency": "EUR"}],
           "campaigns": [campaign_doc("ok"), campaign_doc("bad", bid={"strategy": "CPC", "amount": 99}),
                         campaign_doc("orphan", advertiser_id="ghost")]}
    with pytest.raises(ValidationError) as exc:
        apply_import(store, _jsonable(bad), actor="ci")
    text = str(exc.value)
    assert "campaign bad.bid.amount" in text and "ghost" in text
    assert store.list_advertisers() == [] and store.list_campaigns() == []
    with pytest.raises(ValidationError, match="unknown section"):
        load_yaml("campaign: []")


def test_bulk_load(store, campaign_doc):
    advs = [Advertiser(id=f"a{i}", name=f"A{i}") for i in range(5)]
    camps = [Campaign.from_doc(campaign_doc(f"c{i}", advertiser_id=f"a{i % 5}")) for i in range(20)]
    prods = [_product(f"s{i}") for i in range(200)]
    counts = store.bulk_load(advertisers=advs, campaigns=camps, products=prods, actor="sim")
    assert counts == {"advertisers": 5, "campaigns": 20, "creatives": 20, "products": 200}
    assert len(store.list_campaigns()) == 20 and len(store.list_products()) == 200
    assert store.get_campaign("c7").creatives[0].id == "c7-cr1"
    with pytest.raises(AlreadyExists):
        store.bulk_load(products=[_product("s1")])
    with pytest.raises(ValidationError):
        store.bulk_load(campaigns=[Campaign.from_doc(campaign_doc("cx", advertiser_id="a0", budget={"daily": -1}))])
    assert {e.entity_type for e in store.audit_log(actor="sim")} == {"advertisers", "campaigns", "creatives", "products"}


def _jsonable(doc):
    """Datetimes → ISO strings, as a YAML file written by hand would have them."""
    import json

    return json.loads(json.dumps(doc, default=lambda v: v.isoformat()))


def test_end_expired(store, acme, campaign_doc):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    store.create_campaign(Campaign.from_doc(campaign_doc("old", schedule={"start": now - timedelta(days=5),
                                                                          "end": now + timedelta(seconds=1)})), actor="a")
    store.create_campaign(Campaign.from_doc(campaign_doc("live")), actor="a")
    assert store.end_expired(now=now + timedelta(seconds=2)) == ["old"]
    assert store.get_campaign("old").status == "ended" and store.get_campaign("live").status == "active"
    assert store.end_expired(now=now + timedelta(seconds=2)) == []
    assert store.audit_log(entity_id="old")[0].action == "status:ended"


def test_concurrent_first_open_migrates_once(store_url):
    """Serving and the simulator may open a fresh database at the same moment."""
    from concurrent.futures import ThreadPoolExecutor

    def open_close(_):
        CampaignStore.open(store_url).close()
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(open_close, range(4)))
    with CampaignStore.open(store_url) as s:
        assert s.versions() == (0, 0)


def test_spend_ledger_adds_from_several_servers_at_once(store_url):
    """Server processes add what they charged to one total per campaign and day; none may
    overwrite another's increment (a lost increment is budget paced twice after a restart)."""
    from concurrent.futures import ThreadPoolExecutor

    from campaigns import CampaignStore

    day = 20_000
    stores = [CampaignStore.open(store_url) for _ in range(4)]
    try:
        def add(k: int) -> bool:
            for _ in range(25):
                stores[k].add_spend(day, {"c1": 0.01, f"only-{k}": 1.0, "zero": 0.0})
            return True

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(add, range(4)))
        spent = stores[0].spend_on(day)
        assert spent["c1"] == pytest.approx(4 * 25 * 0.01)
        assert {k: spent[f"only-{k}"] for k in range(4)} == {k: pytest.approx(25.0) for k in range(4)}
        assert "zero" not in spent, "nothing charged, nothing written"
        assert stores[1].spend_on(day + 1) == {}
        stores[2].add_spend(day + 8, {"c1": 2.0})          # a week later: the old day is dropped
        assert stores[3].spend_on(day) == {} and stores[3].spend_on(day + 8) == {"c1": 2.0}
    finally:
        for s in stores:
            s.close()


def test_pacing_totals_are_summed_by_the_database(store_url):
    """What a process's book reads of the others every 5 s: one row per campaign however many
    writers (each process start is one) left rows today."""
    from campaigns import CampaignStore, PacingLevels as L, PacingTotals

    day = 20_000
    a, b = CampaignStore.open(store_url), CampaignStore.open(store_url)
    try:
        a.put_pacing(day, "w-a", {"c1": L(1.0, 0.2, 0.04, 0.01, 100.0), "c2": L(3.0, 0.7, 0.1, None, 100.0)})
        b.put_pacing(day, "w-b", {"c1": L(2.0, 0.5, 0.1, 0.02, 700.0)})
        b.put_pacing(day, "w-c", {"c1": L(4.0, 1.0, 0.3, None, 800.0)})     # newest, but without a rate
        totals = b.pacing_totals(day, exclude_writer="w-x", fresh_after=650.0)
        assert set(totals) == {"c1", "c2"}
        assert totals["c1"] == pytest.approx(PacingTotals(7.0, 1.5, 0.4, 0.02)), \
            "w-a wrote before fresh_after: its issued cost counts, its pending clicks do not"
        assert totals["c2"] == PacingTotals(3.0, 0.0, 0.0, None)
        mine_excluded = a.pacing_totals(day, exclude_writer="w-b")
        assert mine_excluded["c1"] == pytest.approx(PacingTotals(5.0, 1.2, 0.34, 0.01))
        assert a.pacing_totals(day + 1) == {}
    finally:
        a.close()
        b.close()


def test_stopped_writers_fold_into_one_row_per_campaign(store_url):
    """A day of restarts leaves one retired row per campaign, not one row per process start,
    and the readers' totals do not move when a writer is folded."""
    from campaigns import RETIRED_WRITER, CampaignStore, PacingLevels as L

    day = 20_000
    store = CampaignStore.open(store_url)
    try:
        store.put_pacing(day, "w-1", {"c1": L(1.0, 0.2, 0.04, 0.01, 100.0), "c2": L(2.0, 0.0, 0.0, None, 100.0)})
        store.put_pacing(day, "w-2", {"c1": L(3.0, 0.5, 0.1, None, 200.0)})
        store.put_pacing(day, "w-live", {"c1": L(0.5, 0.1, 0.01, 0.03, 250.0)})
        store.put_pacing(day + 1, "w-tomorrow", {"c1": L(1.0, 0.0, 0.0, None, 300.0)})
        assert store.pacing_writers(day) == ["w-1", "w-2", "w-live"]
        before = store.pacing_totals(day, exclude_writer="reader", fresh_after=150.0)
        assert store.retire_pacing(day, "w-1") == 2
        assert store.retire_pacing(day, "w-2") == 1
        assert store.retire_pacing(day, "w-2") == 0, "a second fold finds nothing"
        assert store.pacing_writers(day) == ["w-live"], "the folded row is no writer to fold"
        rows = store.pacing_on(day)
        assert set(rows["c1"]) == {RETIRED_WRITER, "w-live"} and set(rows["c2"]) == {RETIRED_WRITER}
        assert rows["c1"][RETIRED_WRITER] == pytest.approx(L(4.0, 0.7, 0.14, 0.01, 200.0))
        after = store.pacing_totals(day, exclude_writer="reader", fresh_after=150.0)
        assert after["c1"].issued == before["c1"].issued == pytest.approx(4.5)
        assert after["c2"] == before["c2"]
        assert after["c1"].rate == pytest.approx(0.03), "the live writer's rate is still the newest"
        # the folded pending cost counts until the window has passed since the last fold's writer
        assert after["c1"].outstanding == pytest.approx(0.8) and before["c1"].outstanding == pytest.approx(0.6)
        assert store.pacing_totals(day, fresh_after=225.0)["c1"].outstanding == pytest.approx(0.1)
    finally:
        store.close()


def test_pacing_levels_are_kept_per_writer_and_replaced(store_url):
    """Each server process replaces its own rows; a reader gets every other writer's."""
    from campaigns import CampaignStore, PacingLevels

    day = 20_000
    a, b = CampaignStore.open(store_url), CampaignStore.open(store_url)
    try:
        a.put_pacing(day, "w-a", {"c1": PacingLevels(1.0, 0.2, 0.04, None, 100.0),
                                  "c2": PacingLevels(3.0, 0.0, 0.0, 0.01, 100.0)})
        b.put_pacing(day, "w-b", {"c1": PacingLevels(2.0, 0.5, 0.1, 0.02, 101.0)})
        a.put_pacing(day, "w-a", {"c1": PacingLevels(1.5, 0.1, 0.02, 0.03, 102.0)})     # replaces, not adds
        seen_by_b = b.pacing_on(day, exclude_writer="w-b")
        assert seen_by_b == {"c1": {"w-a": PacingLevels(1.5, 0.1, 0.02, 0.03, 102.0)},
                             "c2": {"w-a": PacingLevels(3.0, 0.0, 0.0, 0.01, 100.0)}}
        assert set(a.pacing_on(day)["c1"]) == {"w-a", "w-b"}
        assert a.pacing_on(day, exclude_writer="w-a") == {"c1": {"w-b": PacingLevels(2.0, 0.5, 0.1, 0.02, 101.0)}}
        assert a.pacing_on(day + 1) == {}
        b.put_pacing(day + 8, "w-b", {"c1": PacingLevels(1.0, 0.0, 0.0, None, 0.0)})   # a week later
        assert a.pacing_on(day) == {}, "the old day's rows are dropped"
    finally:
        a.close()
        b.close()
