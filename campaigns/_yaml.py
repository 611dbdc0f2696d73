"""Campaigns as code: YAML export, and import that shows a diff and is idempotent.

Document shape (every key optional)::

    advertisers: [{id, name, currency}]
    campaigns:   [{id, advertiser_id, name, objective, status, schedule, budget, bid,
                   targeting, frequency_cap, excluded_categories, creatives: [...]}]
    products:    [{sku, title, brand, category, price, currency, availability, landing_url, quality}]

Import compares each entity with the store and only writes what differs, so importing
the same file twice changes nothing the second time (and writes no audit entries).
Entities in the store but absent from the file are left alone (no pruning).
Everything is parsed and validated before the first write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from campaigns._model import Advertiser, Campaign, Product
from campaigns._validation import check_advertiser, check_campaign, check_product, check_transition
from campaigns.errors import NotFound, ValidationError

_SECTIONS = ("advertisers", "campaigns", "products")


def _compact(value: Any) -> Any:
    """Drop None values and empty lists so exported YAML stays readable (defaults restore them)."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != [] and v != () and v != {}}
    if isinstance(value, (list, tuple)):
        return [_compact(v) for v in value]
    return value


def export_document(store, *, advertiser_id: str | None = None, include_products: bool = False) -> dict:
    """The store (or one advertiser's part of it) as a campaigns-as-code document."""
    advertisers = [a for a in store.list_advertisers() if advertiser_id in (None, a.id)]
    doc: dict[str, Any] = {
        "advertisers": [_compact(a.to_doc()) for a in advertisers],
        "campaigns": [_compact(c.to_doc()) for c in store.list_campaigns(advertiser_id=advertiser_id)],
    }
    if include_products:
        doc["products"] = [_compact(p.to_doc()) for p in store.list_products()
                           if advertiser_id in (None, p.advertiser_id)]
    return doc


def dump_yaml(doc: dict) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)


def load_yaml(text: str) -> dict:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"the file is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValidationError(f"the document must be a mapping with {', '.join(_SECTIONS)}; got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(_SECTIONS))
    if unknown:
        raise ValidationError([(k, f"unknown section; use {', '.join(_SECTIONS)}") for k in unknown], entity="document")
    return doc


def _flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(doc, list) and doc and all(isinstance(v, dict) and "id" in v for v in doc):
        out = {}
        for v in doc:
            out.update(_flatten({k: x for k, x in v.items() if k != "id"}, f"{prefix}[{v['id']}]"))
        return out
    return {prefix: doc}


def field_diff(before: dict | None, after: dict) -> list[str]:
    """Human-readable changed fields: ``budget.daily: 100.0 -> 80.0``."""
    a, b = _flatten(before or {}), _flatten(after)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            if key not in a:
                lines.append(f"+ {key}: {b[key]!r}")
            elif key not in b:
                lines.append(f"- {key}: {a[key]!r}")
            else:
                lines.append(f"~ {key}: {a[key]!r} -> {b[key]!r}")
    return lines


@dataclass
class Change:
    kind: str            # advertiser | campaign | product
    id: str
    action: str          # create | update | unchanged
    lines: list[str] = field(default_factory=list)


@dataclass
class ImportPlan:
    """What an import would do (``apply_import`` returns the plan it carried out)."""

    changes: list[Change]
    applied: bool = False
    _entities: dict = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "update": 0, "unchanged": 0}
        for c in self.changes:
            out[c.action] += 1
        return out

    def render(self, *, max_lines_per_entity: int = 40) -> str:
        rows = []
        for c in self.pending:
            rows.append(f"{'+' if c.action == 'create' else '~'} {c.kind} {c.id} ({c.action})")
            shown = c.lines[:max_lines_per_entity]
            rows.extend(f"    {line}" for line in shown)
            if len(c.lines) > len(shown):
                rows.append(f"    ... {len(c.lines) - len(shown)} more")
        n = self.counts()
        rows.append(f"{n['create']} to create, {n['update']} to update, {n['unchanged']} unchanged"
                    if not self.applied else
                    f"{n['create']} created, {n['update']} updated, {n['unchanged']} unchanged")
        return "\n".join(rows)


def plan_import(store, doc: dict) -> ImportPlan:
    """Parse and validate ``doc`` completely and compare it with the store (no writes)."""
    problems: list[tuple[str, str]] = []

    def parse(cls, section: str):
        out = []
        for i, item in enumerate(doc.get(section) or []):
            ident = item.get("id", item.get("sku", "?")) if isinstance(item, dict) else "?"
            try:
                parsed = cls.from_doc(item, where=repr(ident))
                out.append(parsed)
            except ValidationError as exc:
                problems.extend((f"{section}[{i}].{f}" if f else f"{section}[{i}]", m) for f, m in exc.problems)
        return out

    advertisers, campaigns, products = parse(Advertiser, "advertisers"), parse(Campaign, "campaigns"), parse(Product, "products")
    for section, key, items in (("advertisers", "id", advertisers), ("campaigns", "id", campaigns),
                                ("products", "sku", products)):
        ids = [getattr(x, key) for x in items]
        for dup in sorted({i for i in ids if ids.count(i) > 1}):
            problems.append((section, f"{dup!r} appears more than once; keep one entry"))
    now = datetime.now(timezone.utc)
    adv_by_id = {a.id: a for a in advertisers}
    changes: list[Change] = []
    entities: dict[tuple[str, str], Any] = {}
    for a in advertisers:
        try:
            check_advertiser(a)
        except ValidationError as exc:
            problems.extend((f"advertiser {a.id}.{f}", m) for f, m in exc.problems)
        try:
            before = store.get_advertiser(a.id).to_doc()
        except NotFound:
            before = None
        changes.append(_change("advertiser", a.id, before, a.to_doc()))
        entities[("advertiser", a.id)] = a
    for p in products:
        try:
            check_product(p, store.rules)
        except ValidationError as exc:
            problems.extend((f"product {p.sku}.{f}", m) for f, m in exc.problems)
    existing_products = {}
    if products:
        skus = {p.sku for p in products}
        for p in store.list_products():
            if p.sku in skus:
                existing_products[p.sku] = p.to_doc()
    for p in products:
        changes.append(_change("product", p.sku, existing_products.get(p.sku), p.to_doc()))
        entities[("product", p.sku)] = p
    for c in campaigns:
        adv = adv_by_id.get(c.advertiser_id)
        if adv is None:
            try:
                adv = store.get_advertiser(c.advertiser_id)
            except NotFound:
                problems.append((f"campaign {c.id}.advertiser_id", f"advertiser {c.advertiser_id!r} is neither in the "
                                                                   "file nor in the store; add it under advertisers:"))
        try:
            before_c = store.get_campaign(c.id)
        except NotFound:
            before_c = None
        before = before_c.to_doc() if before_c else None
        change = _change("campaign", c.id, before, c.to_doc())
        if change.action != "unchanged":
            try:
                if before_c is not None:
                    check_transition(before_c, c.status)
                check_campaign(c, store.rules, now=now, advertiser=adv)
            except ValidationError as exc:
                problems.extend((f"campaign {c.id}.{f}", m) for f, m in exc.problems)
        changes.append(change)
        entities[("campaign", c.id)] = c
    if problems:
        raise ValidationError(problems, entity="the import")
    return ImportPlan(changes=changes, _entities=entities)


def _change(kind: str, ident: str, before: dict | None, after: dict) -> Change:
    if before is None:
        return Change(kind, ident, "create", field_diff(None, after))
    if before == after:
        return Change(kind, ident, "unchanged")
    return Change(kind, ident, "update", field_diff(before, after))


def apply_import(store, doc: dict, *, actor: str, dry_run: bool = False) -> ImportPlan:
    """Plan the import, and unless ``dry_run`` write the pending changes (advertisers,
    products, then campaigns). Returns the plan; ``plan.applied`` says whether it was written."""
    plan = plan_import(store, doc)
    if dry_run or not plan.pending:
        return plan
    by_kind: dict[str, list] = {"advertiser": [], "product": [], "campaign": []}
    for c in plan.pending:
        by_kind[c.kind].append(plan._entities[(c.kind, c.id)])
    for adv in by_kind["advertiser"]:
        store.upsert_advertiser(adv, actor=actor)
    if by_kind["product"]:
        store.upsert_products(by_kind["product"], actor=actor)
    for camp in by_kind["campaign"]:
        store.put_campaign(camp, actor=actor)
    plan.applied = True
    return plan
