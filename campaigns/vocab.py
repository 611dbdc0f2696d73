"""Closed vocabularies that targeting is validated against (besides the taxonomy).

Regions are coarse ISO 3166 codes: a country (``DE``) or a first-level subdivision
(``DE-BE``). Location categories and devices match what the assistant sends in
``Context.location_category`` and ``Context.device`` (lower-cased enum name).
Scenes, detected objects and intent keywords are open vocabularies (lower-cased tokens).
"""

from __future__ import annotations

DEVICES: frozenset[str] = frozenset({"glasses", "phone"})

LOCATION_CATEGORIES: frozenset[str] = frozenset({
    "retail", "grocery_store", "mall", "home", "office", "transit", "airport", "train_station",
    "restaurant", "cafe", "bar", "gym", "park", "outdoors", "street", "hotel", "school",
    "university", "hospital", "place_of_worship", "stadium", "cinema", "museum", "car",
    "beach", "other",
})
"""``hospital``, ``place_of_worship`` and ``school`` exist so that they can be recognised;
targeting them is refused (see ``SENSITIVE_LOCATIONS``)."""

SENSITIVE_LOCATIONS: frozenset[str] = frozenset({"hospital", "place_of_worship", "school"})

CURRENCIES: frozenset[str] = frozenset({
    "EUR", "USD", "GBP", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY", "CAD", "AUD", "BRL", "INR",
})

_SUBDIVISIONS: dict[str, tuple[str, ...]] = {
    "DE": ("BW", "BY", "BE", "BB", "HB", "HH", "HE", "MV", "NI", "NW", "RP", "SL", "SN", "ST", "SH", "TH"),
    "US": ("AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS",
           "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY",
           "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV",
           "WI", "WY", "DC"),
    "GB": ("ENG", "SCT", "WLS", "NIR"),
    "FR": ("IDF", "ARA", "BFC", "BRE", "CVL", "COR", "GES", "HDF", "NOR", "NAQ", "OCC", "PDL", "PAC"),
    "ES": ("MD", "CT", "AN", "VC", "GA", "PV"),
    "IT": ("21", "25", "34", "45", "52", "62", "72", "82"),
    "NL": ("NH", "ZH", "UT", "NB", "GE"),
    "AT": ("1", "2", "3", "4", "5", "6", "7", "8", "9"),
    "CH": ("ZH", "BE", "GE", "BS", "VD", "TI"),
}
_COUNTRIES = ("DE", "US", "GB", "FR", "ES", "IT", "NL", "AT", "CH", "BE", "SE", "NO", "DK", "FI", "PL",
              "CZ", "PT", "IE", "JP", "CA", "AU", "BR", "IN")

REGIONS: frozenset[str] = frozenset(_COUNTRIES) | frozenset(
    f"{country}-{sub}" for country, subs in _SUBDIVISIONS.items() for sub in subs
)

CALLS_TO_ACTION: frozenset[str] = frozenset({
    "Shop now", "Learn more", "Buy now", "Book now", "Sign up", "Get offer", "Order now",
    "Download", "Watch now", "Visit store", "Get directions",
})
