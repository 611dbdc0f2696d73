"""Fixed vocabularies of the simulated world: scenes, objects, places, regions, words.

Everything here is plain data. Scenes say which category tops (and a few specific
leaves) are relevant where the user is, and when people tend to be there; objects are
derived from leaves, so a detected object always names the category it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scene:
    name: str
    location_category: str
    tops: dict[str, float]           # category top -> relevance weight (0..3)
    leaves: dict[str, float]         # specific leaf id -> extra relevance weight
    hours: tuple[tuple[int, int, float], ...]  # (from_hour, to_hour_exclusive, weight) peaks
    weekday_weight: float = 1.0      # relative frequency on Mon..Fri vs weekend (1.0)
    generic_objects: tuple[str, ...] = ()


SCENES: tuple[Scene, ...] = (
    Scene("grocery_store", "grocery_store", {"grocery": 3.0, "wine_spirits": 1.2, "baby": 0.6, "pets": 0.8, "kitchen": 0.3},
          {"grocery/fresh_produce": 0.5}, ((9, 13, 1.0), (16, 20, 1.6)), 1.0, ("shopping_cart", "shelf", "price_tag")),
    Scene("store_aisle", "retail", {"beauty": 1.2, "fashion": 1.0, "electronics": 1.2, "home": 1.0, "diy": 0.8,
                                    "toys_games": 0.8, "kitchen": 0.8, "office": 0.5},
          {}, ((10, 19, 1.0),), 0.9, ("shelf", "price_tag", "shopping_basket")),
    Scene("mall", "mall", {"fashion": 2.2, "beauty": 1.6, "electronics": 1.0, "toys_games": 0.6, "food_delivery": 0.4},
          {"fashion/sneakers": 0.5}, ((11, 20, 1.0),), 0.7, ("escalator", "shop_window", "shopping_bag")),
    Scene("gym", "gym", {"sports": 3.0, "beauty": 0.3, "food_delivery": 0.2},
          {"sports/gym_equipment": 0.8, "sports/sports_nutrition": 0.8, "sports/fitness_trackers": 0.5,
           "food_delivery/salads": 0.6}, ((6, 9, 1.4), (17, 21, 1.6)), 1.1, ("treadmill", "mirror", "bench")),
    Scene("kitchen", "home", {"kitchen": 2.6, "grocery": 1.6, "food_delivery": 1.2, "wine_spirits": 0.5},
          {"grocery/coffee": 0.4}, ((6, 9, 1.3), (11, 13, 0.7), (17, 21, 1.6)), 1.0, ("stove", "fridge", "sink")),
    Scene("living_room", "home", {"home": 1.6, "electronics": 1.6, "books_media": 1.2, "entertainment": 1.2,
                                  "toys_games": 0.6, "food_delivery": 0.8, "finance": 0.3},
          {"electronics/tv": 0.6, "entertainment/streaming_services": 0.6}, ((18, 24, 1.6), (13, 17, 0.5)), 0.9,
          ("sofa", "lamp", "coffee_table")),
    Scene("garden", "home", {"garden": 3.0, "diy": 1.5, "pets": 0.6}, {}, ((9, 19, 1.0),), 0.7,
          ("lawn", "fence", "hose")),
    Scene("street", "street", {"fashion": 1.5, "food_delivery": 1.0, "entertainment": 1.0, "auto": 0.5, "travel": 0.4},
          {}, ((8, 22, 1.0),), 1.0, ("crosswalk", "bus_stop", "storefront")),
    Scene("park", "park", {"sports": 1.6, "pets": 1.6, "toys_games": 0.5, "garden": 0.5},
          {"sports/running_shoes": 0.6, "sports/cycling": 0.4}, ((7, 10, 1.0), (16, 20, 1.2)), 0.8,
          ("tree", "bench", "path")),
    Scene("cafe", "cafe", {"food_delivery": 1.4, "books_media": 1.0, "electronics": 0.6, "travel": 0.5, "grocery": 0.3},
          {"grocery/coffee": 1.5, "grocery/tea": 0.8, "food_delivery/coffee_to_go": 1.5, "food_delivery/desserts": 0.6},
          ((7, 11, 1.4), (14, 18, 1.0)), 1.0, ("cup", "counter", "menu_board")),
    Scene("office", "office", {"office": 3.0, "electronics": 1.5, "food_delivery": 0.7, "finance": 0.5, "travel": 0.4},
          {"electronics/laptops": 0.5, "electronics/headphones": 0.4}, ((9, 12, 1.2), (13, 18, 1.2)), 2.5,
          ("monitor", "keyboard", "whiteboard")),
    Scene("car", "car", {"auto": 3.0, "travel": 0.7, "books_media": 0.5},
          {"books_media/podcasts": 0.6, "books_media/music": 0.6}, ((7, 9, 1.4), (16, 19, 1.4)), 1.3,
          ("steering_wheel", "dashboard", "road")),
    Scene("airport", "airport", {"travel": 3.0, "electronics": 1.0, "books_media": 1.0, "beauty": 0.5, "fashion": 0.5},
          {"electronics/headphones": 0.6}, ((5, 22, 1.0),), 1.0, ("departure_board", "gate", "suitcase_belt")),
    Scene("train_station", "train_station", {"travel": 1.6, "books_media": 1.0, "food_delivery": 1.0, "electronics": 0.5},
          {"books_media/magazines": 0.6}, ((6, 10, 1.4), (16, 20, 1.4)), 1.4, ("platform", "ticket_machine", "train")),
)

DEVICES: tuple[str, ...] = ("glasses", "phone")

REGIONS: tuple[tuple[str, int], ...] = (
    # (coarse ISO 3166 region code, UTC offset in hours) — the user's home region decides local time
    ("DE-BE", 1), ("DE-BY", 1), ("DE-NW", 1), ("DE-HH", 1), ("FR-IDF", 1), ("FR-ARA", 1), ("ES-MD", 1),
    ("ES-CT", 1), ("IT-25", 1), ("NL-NH", 1), ("AT-9", 1), ("CH-ZH", 1), ("GB-ENG", 0), ("GB-SCT", 0), ("FI", 2),
)

CONSENT_PROFILES: tuple[str, ...] = ("all", "context_only", "none")
"""all: context+personalization+measurement; context_only: context only; none: nothing."""

CHEAP_WORDS: tuple[str, ...] = ("cheap", "affordable", "budget")
PREMIUM_WORDS: tuple[str, ...] = ("premium", "high-end", "luxury")

# {label}: category label, {brand}: a brand, {price}: a price cap, {cheap}/{premium}: price words.
# Each template: (text, uses_brand, price kind: "" | "cap" | "cheap" | "premium")
INTENT_TEMPLATES: tuple[tuple[str, bool, str], ...] = (
    ("I need {label}", False, ""),
    ("I need {label} under {price} euros", False, "cap"),
    ("Where can I buy {brand} {label}?", True, ""),
    ("Show me {cheap} {label}", False, "cheap"),
    ("Looking for {premium} {label} nearby", False, "premium"),
    ("Any good {label} around here?", False, ""),
    ("I want some {brand} {label}", True, ""),
    ("What are the best {label} for under {price} euros?", False, "cap"),
    ("Find me {cheap} {brand} {label}", True, "cheap"),
    ("Are there {label} deals today?", False, ""),
)

SENSITIVE_INTENT_TEMPLATES: tuple[str, ...] = (
    "Where is the nearest {label}?",
    "I am looking for {label} near me",
    "Tell me more about {label}",
)

DISTRACTOR_OBJECTS: tuple[str, ...] = ("person", "door", "window", "chair", "table", "sign", "bag", "phone_screen")

BRAND_SYLLABLES_A: tuple[str, ...] = (
    "vel", "nor", "ast", "lum", "kai", "zen", "bri", "cor", "dal", "fen", "gro", "hal", "iso", "jun", "kol",
    "mar", "nex", "ori", "pol", "qua", "ros", "sol", "tor", "ul", "vin", "wex", "yar", "zor",
)
BRAND_SYLLABLES_B: tuple[str, ...] = (
    "ora", "brook", "ix", "ton", "ara", "ena", "mont", "lux", "ven", "dal", "ia", "os", "ex", "ium", "eo", "ark",
)

HEADLINE_HOOKS: tuple[str, ...] = (
    "made for every day", "new season, new deals", "quality you can feel", "free delivery today",
    "rated 4.8 by shoppers", "limited offer", "try it risk-free", "the smart choice",
)
CALLS_TO_ACTION: tuple[str, ...] = ("Shop now", "Learn more", "Get offer", "Order now", "Buy now")
PRODUCT_ADJECTIVES: tuple[str, ...] = (
    "Classic", "Pro", "Essential", "Urban", "Eco", "Sport", "Deluxe", "Mini", "Max", "Signature", "Everyday", "Lite",
)


def object_label(leaf: str) -> str:
    """The detected-object label a leaf's items show up as (``running_shoes`` → ``running_shoe``)."""
    if leaf.endswith("ies"):
        return leaf[:-3] + "y"
    if leaf.endswith("ses") or leaf.endswith("xes") or leaf.endswith("shes") or leaf.endswith("ches"):
        return leaf[:-2]
    if leaf.endswith("s") and not leaf.endswith("ss"):
        return leaf[:-1]
    return leaf
