"""Every business rule a campaign, creative, product or advertiser must satisfy.

Pure functions over the domain models: they return a list of ``(field, message)``
problems, each message naming the fix. ``check_*`` raise one ``ValidationError`` listing
all problems, so a marketer fixes a YAML file in one pass rather than one error at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from campaigns._model import Advertiser, Campaign, Creative, Product, utc
from campaigns.errors import ValidationError
from campaigns.taxonomy import SENSITIVE_TERMS, SENSITIVE_TOPS, Taxonomy
from campaigns.vocab import CURRENCIES, DEVICES, LOCATION_CATEGORIES, REGIONS, SENSITIVE_LOCATIONS

Problems = list[tuple[str, str]]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_MAX_HEADLINE = 90
_MAX_BODY = 300
_MAX_TOKEN = 64
_MAX_LIST = 200


@dataclass(frozen=True)
class Rules:
    """The configurable inputs of validation (from ``settings.campaigns``)."""

    taxonomy: Taxonomy
    max_bid: float = 50.0
    """Largest CPC bid, or CPM bid, a campaign may set (``settings.campaigns.max_bid``)."""


def _check_id(value: str, field: str, problems: Problems) -> None:
    if not _ID.match(value or ""):
        problems.append((field, f"{value!r} is not a valid id; use 1-64 letters, digits, '_', '-', '.', ':' "
                                "starting with a letter or digit"))


def _check_https(url: str, field: str, problems: Problems, *, required: bool) -> None:
    if not url:
        if required:
            problems.append((field, "is empty; set an https:// URL"))
        return
    if not url.startswith("https://") or len(url) <= len("https://") or " " in url:
        fixed = "https://" + url.split("://", 1)[-1] if "://" in url else "https://" + url
        problems.append((field, f"{url!r} is not an https URL; use {fixed!r}"))


def _check_currency(currency: str, field: str, problems: Problems) -> None:
    if currency not in CURRENCIES:
        problems.append((field, f"unknown currency {currency!r}; use one of {', '.join(sorted(CURRENCIES))}"))


def _check_category(cat: str, field: str, rules: Rules, problems: Problems, *, allow_sensitive: bool) -> None:
    if cat not in rules.taxonomy:
        try:
            rules.taxonomy.get(cat)
            hint = ""
        except KeyError as exc:
            hint = str(exc).strip("'\"")
        problems.append((field, hint or f"unknown category {cat!r}; run 'sightline campaigns categories'"))
        return
    if not allow_sensitive and rules.taxonomy.is_sensitive(cat):
        problems.append((field, f"{cat!r} is a sensitive category ({', '.join(sorted(SENSITIVE_TOPS))}) and may "
                                "never be targeted; remove it (you may list it under excluded_categories)"))


def advertiser_problems(adv: Advertiser) -> Problems:
    problems: Problems = []
    _check_id(adv.id, "id", problems)
    if not adv.name:
        problems.append(("name", "is empty; set the advertiser's display name"))
    _check_currency(adv.currency, "currency", problems)
    return problems


def creative_problems(cr: Creative, prefix: str = "") -> Problems:
    problems: Problems = []
    _check_id(cr.id, f"{prefix}id", problems)
    if not cr.headline:
        problems.append((f"{prefix}headline", "is empty; write a headline of up to 90 characters"))
    elif len(cr.headline) > _MAX_HEADLINE:
        problems.append((f"{prefix}headline", f"is {len(cr.headline)} characters; shorten it to {_MAX_HEADLINE}"))
    if len(cr.body) > _MAX_BODY:
        problems.append((f"{prefix}body", f"is {len(cr.body)} characters; shorten it to {_MAX_BODY}"))
    _check_https(cr.landing_url, f"{prefix}landing_url", problems, required=True)
    _check_https(cr.image_url, f"{prefix}image_url", problems, required=False)
    if not cr.call_to_action:
        problems.append((f"{prefix}call_to_action", "is empty; set e.g. 'Shop now' or 'Learn more'"))
    return problems


def campaign_problems(c: Campaign, rules: Rules, *, now: datetime | None = None,
                      advertiser: Advertiser | None = None) -> Problems:
    """All rule violations of one campaign (with its creatives). ``now`` checks activation."""
    p: Problems = []
    _check_id(c.id, "id", p)
    _check_id(c.advertiser_id, "advertiser_id", p)
    if not c.name:
        p.append(("name", "is empty; give the campaign a name"))

    # schedule
    s = c.schedule
    if s.end is not None and s.end <= s.start:
        p.append(("schedule.end", f"{s.end.isoformat()} is not after schedule.start {s.start.isoformat()}; "
                                  f"set schedule.end after {s.start.isoformat()} (or leave it empty)"))
    for i, w in enumerate(s.dayparting):
        f = f"schedule.dayparting[{i}]"
        if not w.weekdays or any(d < 0 or d > 6 for d in w.weekdays):
            p.append((f + ".weekdays", f"{list(w.weekdays)} must be non-empty days 0 (Monday) .. 6 (Sunday)"))
        if not (0 <= w.start_hour < w.end_hour <= 24):
            p.append((f, f"hours {w.start_hour}..{w.end_hour} are invalid; use 0 <= start_hour < end_hour <= 24"))

    # budget
    b = c.budget
    if b.daily is None and b.lifetime is None:
        p.append(("budget", "has neither a daily nor a lifetime amount; set budget.daily and/or budget.lifetime"))
    if b.daily is not None and b.daily <= 0:
        p.append(("budget.daily", f"{b.daily} is not positive; set a daily budget above 0 (or remove it)"))
    if b.lifetime is not None and b.lifetime <= 0:
        p.append(("budget.lifetime", f"{b.lifetime} is not positive; set a lifetime budget above 0 (or remove it)"))
    if b.daily and b.lifetime and b.daily > 0 and b.lifetime > 0 and b.lifetime < b.daily:
        p.append(("budget.lifetime", f"{b.lifetime} is below the daily budget {b.daily}; set budget.lifetime to "
                                     f"at least {b.daily} or lower budget.daily"))
    _check_currency(b.currency, "budget.currency", p)
    if advertiser is not None and b.currency in CURRENCIES and advertiser.currency != b.currency:
        p.append(("budget.currency", f"{b.currency} differs from advertiser {advertiser.id!r}'s currency "
                                     f"{advertiser.currency}; set budget.currency: {advertiser.currency}"))

    # bid
    if c.bid.amount <= 0:
        p.append(("bid.amount", f"{c.bid.amount} is not positive; set a {c.bid.strategy} bid above 0"))
    elif c.bid.amount > rules.max_bid:
        p.append(("bid.amount", f"{c.bid.amount} is above the maximum {c.bid.strategy} bid {rules.max_bid}; "
                                f"lower it to at most {rules.max_bid} (settings campaigns.max_bid)"))
    if c.budget.daily and 0 < c.budget.daily and c.bid.strategy == "CPC" and c.bid.amount > c.budget.daily:
        p.append(("bid.amount", f"CPC bid {c.bid.amount} exceeds the daily budget {c.budget.daily}; "
                                "lower the bid or raise budget.daily"))

    # targeting
    t = c.targeting
    for name in ("scenes", "objects", "keywords", "categories", "location_categories", "regions", "devices"):
        values = getattr(t, name)
        if len(values) > _MAX_LIST:
            p.append((f"targeting.{name}", f"has {len(values)} entries; keep at most {_MAX_LIST}"))
        for v in values:
            if len(v) > _MAX_TOKEN:
                p.append((f"targeting.{name}", f"{v[:20]!r}... is longer than {_MAX_TOKEN} characters; shorten it"))
    for cat in t.categories:
        _check_category(cat, "targeting.categories", rules, p, allow_sensitive=False)
    sensitive_words = _sensitive_words(rules.taxonomy)
    for kw in (*t.keywords, *t.scenes, *t.objects):
        if kw in sensitive_words:
            p.append(("targeting", f"{kw!r} names a sensitive category ({sensitive_words[kw]}) and may never be "
                                   "targeted; remove it"))
    for loc in t.location_categories:
        if loc not in LOCATION_CATEGORIES:
            p.append(("targeting.location_categories", f"unknown location category {loc!r}; use one of "
                                                       f"{', '.join(sorted(LOCATION_CATEGORIES - SENSITIVE_LOCATIONS))}"))
        elif loc in SENSITIVE_LOCATIONS:
            p.append(("targeting.location_categories", f"{loc!r} is a sensitive location and may never be "
                                                       "targeted; remove it"))
    for region in t.regions:
        if region not in REGIONS:
            country = region.split("-", 1)[0]
            hint = (f"use the country {country!r} or a known subdivision like {sorted(r for r in REGIONS if r.startswith(country + '-'))[:3]}"
                    if country in REGIONS else "use an ISO 3166 code such as 'DE' or 'DE-BE'")
            p.append(("targeting.regions", f"unknown region {region!r}; {hint}"))
    for dev in t.devices:
        if dev not in DEVICES:
            p.append(("targeting.devices", f"unknown device {dev!r}; use {' or '.join(sorted(DEVICES))}"))
    for cat in c.excluded_categories:
        _check_category(cat, "excluded_categories", rules, p, allow_sensitive=True)
    overlap = set(t.categories) & set(c.excluded_categories)
    if overlap:
        p.append(("excluded_categories", f"{sorted(overlap)} are both targeted and excluded; remove them from one list"))

    # frequency cap
    fc = c.frequency_cap
    for name, v in (("per_day", fc.per_day), ("per_week", fc.per_week)):
        if v is not None and v <= 0:
            p.append((f"frequency_cap.{name}", f"{v} is not positive; set at least 1 (or remove the cap)"))
    if fc.skip_uncounted and fc.per_day is None and fc.per_week is None:
        p.append(("frequency_cap.skip_uncounted", "skips uncounted users for a cap that is not set; set per_day "
                                                  "or per_week, or drop skip_uncounted"))
    if fc.per_day and fc.per_week and 0 < fc.per_week < fc.per_day:
        p.append(("frequency_cap.per_week", f"{fc.per_week} is below per_day {fc.per_day}; raise per_week to at "
                                            f"least {fc.per_day}"))

    # creatives
    ids = [cr.id for cr in c.creatives]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        p.append(("creatives", f"duplicate creative ids {dupes}; give each creative its own id"))
    for i, cr in enumerate(c.creatives):
        p.extend(creative_problems(cr, prefix=f"creatives[{i}]."))
    if c.status == "active" and not c.active_creatives():
        p.append(("creatives", "an active campaign needs at least one active creative; add a creative "
                               "(headline, landing_url) or keep the campaign in draft"))
    if c.status == "active" and now is not None and s.end is not None and s.end <= utc(now):
        p.append(("status", f"cannot be active: the schedule ended {s.end.isoformat()}; extend schedule.end "
                            "or set the status to ended"))
    return p


def product_problems(prod: Product, rules: Rules) -> Problems:
    p: Problems = []
    if not prod.sku or len(prod.sku) > 128 or any(ch.isspace() for ch in prod.sku):
        p.append(("sku", f"{prod.sku!r} is not a valid sku; use 1-128 characters without spaces"))
    if not prod.title:
        p.append(("title", "is empty; set the product title"))
    _check_category(prod.category, "category", rules, p, allow_sensitive=False)
    if prod.price < 0:
        p.append(("price", f"{prod.price} is negative; set the price (0 for free items)"))
    _check_currency(prod.currency, "currency", p)
    _check_https(prod.landing_url, "landing_url", p, required=True)
    if prod.quality is not None and not (0.0 <= prod.quality <= 1.0):
        p.append(("quality", f"{prod.quality} is outside [0, 1]; rescale it or leave it empty"))
    return p


def _sensitive_words(taxonomy: Taxonomy) -> "_SensitiveWords":
    words = {top: top for top in SENSITIVE_TOPS}
    for cat in taxonomy.leaves(include_sensitive=True):
        if cat.sensitive:
            words[cat.leaf] = cat.id
            words[cat.label] = cat.id
    words.update(SENSITIVE_TERMS)
    return _SensitiveWords(words)


class _SensitiveWords(dict):
    """Lookup that also catches plurals and sensitive words inside a phrase ("find a church")."""

    def _hit(self, keyword: str) -> str | None:
        text = keyword.lower().strip()
        tokens = text.replace("_", " ").split()
        candidates = [text, text.replace("_", " "), *tokens,
                      *(" ".join(tokens[i:i + 2]) for i in range(len(tokens) - 1))]
        for cand in candidates:
            for form in (cand, cand[:-1] if cand.endswith("s") else None, cand[:-2] if cand.endswith("es") else None):
                if form and dict.__contains__(self, form):
                    return dict.__getitem__(self, form)
        return None

    def __contains__(self, keyword: object) -> bool:
        return isinstance(keyword, str) and self._hit(keyword) is not None

    def __getitem__(self, keyword: str) -> str:
        hit = self._hit(keyword)
        if hit is None:
            raise KeyError(keyword)
        return hit


def check(problems: Problems, entity: str) -> None:
    if problems:
        raise ValidationError(problems, entity=entity)


def check_campaign(c: Campaign, rules: Rules, *, now: datetime | None = None,
                   advertiser: Advertiser | None = None) -> None:
    check(campaign_problems(c, rules, now=now or datetime.now(timezone.utc), advertiser=advertiser),
          f"campaign {c.id!r}")


def check_product(prod: Product, rules: Rules) -> None:
    check(product_problems(prod, rules), f"product {prod.sku!r}")


def check_advertiser(adv: Advertiser) -> None:
    check(advertiser_problems(adv), f"advertiser {adv.id!r}")


def check_transition(c: Campaign, new_status: str) -> None:
    """Status changes a marketer may make: archived is final; ended needs a new schedule first."""
    if c.status == "archived" and new_status != "archived":
        raise ValidationError([("status", f"campaign {c.id!r} is archived and cannot become {new_status}; "
                                          "copy it into a new campaign instead")], entity=f"campaign {c.id!r}")
