"""The category taxonomy shared by campaigns, simulation, features and serving.

Leaves are ``top/leaf`` ids (``sports/running_shoes``). The sensitive tops (health,
religion, politics, sexuality, minors) exist so that detections and intents can be
*recognised* as sensitive and dropped: they may never be targeted or become features.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

SENSITIVE_TOPS: frozenset[str] = frozenset({"health", "religion", "politics", "sexuality", "minors"})

# Everyday words and phrases (singular, lower case) that name a sensitive leaf. Campaign
# validation refuses them as targeting keywords; streaming recognises them in detected
# objects and spoken intents and drops them, so neither path can target what the other
# would never store.
SENSITIVE_TERMS: dict[str, str] = {
    "drugstore": "health/pharmacy", "chemist": "health/pharmacy", "medicine": "health/pharmacy",
    "medication": "health/pharmacy", "pill": "health/pharmacy", "prescription": "health/pharmacy",
    "painkiller": "health/pharmacy", "wheelchair": "health/medical_devices", "inhaler": "health/medical_devices",
    "hearing aid": "health/medical_devices", "blood pressure": "health/medical_devices",
    "glucose": "health/medical_devices", "crutch": "health/medical_devices",
    "therapy": "health/mental_health", "therapist": "health/mental_health", "depression": "health/mental_health",
    "anxiety": "health/mental_health", "psychiatrist": "health/mental_health",
    "vitamin": "health/supplements", "pregnancy": "health/fertility", "pregnant": "health/fertility",
    "ovulation": "health/fertility", "ivf": "health/fertility", "hospital": "health/diagnostics",
    "clinic": "health/diagnostics", "doctor": "health/diagnostics", "test kit": "health/diagnostics",
    "church": "religion/places_of_worship", "mosque": "religion/places_of_worship",
    "synagogue": "religion/places_of_worship", "temple": "religion/places_of_worship",
    "chapel": "religion/places_of_worship", "cathedral": "religion/places_of_worship",
    "bible": "religion/religious_books", "quran": "religion/religious_books", "koran": "religion/religious_books",
    "torah": "religion/religious_books", "rosary": "religion/religious_items", "prayer": "religion/religious_items",
    "election": "politics/political_parties", "ballot": "politics/political_parties", "vote": "politics/political_parties",
    "protest": "politics/advocacy", "petition": "politics/advocacy", "rally": "politics/advocacy",
    "dating": "sexuality/dating", "condom": "sexuality/adult_products", "sex toy": "sexuality/adult_products",
    "lgbtq": "sexuality/lgbtq_services", "gay": "sexuality/lgbtq_services", "lesbian": "sexuality/lgbtq_services",
    "queer": "sexuality/lgbtq_services", "kids app": "minors/kids_apps",
}

_TREE: dict[str, tuple[str, ...]] = {
    "grocery": ("organic", "spices", "plant_based", "fresh_produce", "dairy", "bakery", "meat", "seafood", "snacks", "beverages", "coffee", "tea", "frozen_food", "breakfast_cereal", "pasta_rice"),
    "beauty": ("perfume_samples", "hair_tools", "skincare", "makeup", "haircare", "fragrance", "nail_care", "mens_grooming", "sunscreen", "bath_body"),
    "sports": ("climbing", "skiing", "golf", "basketball", "running_shoes", "gym_equipment", "yoga", "cycling", "swimming", "tennis", "football", "outdoor_hiking", "sports_nutrition", "fitness_trackers"),
    "fashion": ("swimwear", "activewear", "socks", "sneakers", "dresses", "jeans", "jackets", "t_shirts", "handbags", "watches", "sunglasses", "jewelry", "boots", "hats"),
    "electronics": ("drones", "e_readers", "monitors", "keyboards_mice", "smartphones", "laptops", "headphones", "tablets", "cameras", "smart_home", "tv", "gaming_consoles", "chargers", "speakers", "smartwatches"),
    "home": ("cleaning", "curtains", "mattresses", "furniture", "bedding", "lighting", "decor", "storage", "rugs", "plants", "candles"),
    "kitchen": ("kettles", "grills_indoor", "cookware", "knives", "small_appliances", "coffee_makers", "blenders", "tableware", "bakeware", "food_storage"),
    "garden": ("irrigation", "bbq_accessories", "tools", "seeds", "outdoor_furniture", "grills", "lawn_care", "planters"),
    "auto": ("bike_accessories", "e_scooters", "car_care", "tires", "car_electronics", "ev_charging", "motor_oil", "car_accessories"),
    "travel": ("rail", "travel_insurance", "luggage", "hotels", "flights", "travel_accessories", "backpacks", "car_rental"),
    "books_media": ("audiobooks", "cookbooks", "fiction", "nonfiction", "comics", "music", "movies", "podcasts", "magazines"),
    "toys_games": ("card_games", "plush", "board_games", "puzzles", "video_games", "building_sets", "outdoor_toys"),
    "pets": ("bird_supplies", "pet_beds", "dog_food", "cat_food", "pet_toys", "pet_care", "aquarium"),
    "office": ("backpacks_laptop", "whiteboards", "stationery", "office_chairs", "desks", "printers", "notebooks", "pens"),
    "diy": ("power_tools", "hand_tools", "paint", "hardware", "electrical"),
    "food_delivery": ("ramen", "vegan_meals", "pizza", "sushi", "burgers", "salads", "desserts", "coffee_to_go"),
    "entertainment": ("sports_tickets", "festivals", "concerts", "cinema", "theatre", "museums", "events", "streaming_services"),
    "finance": ("credit_cards", "banking", "insurance", "investing"),
    "baby": ("diapers", "strollers", "baby_food", "baby_clothes"),
    "wine_spirits": ("sparkling_wine", "non_alcoholic", "red_wine", "white_wine", "beer", "spirits"),
    "health": ("pharmacy", "medical_devices", "mental_health", "supplements", "fertility", "diagnostics"),
    "religion": ("religious_books", "places_of_worship", "religious_items"),
    "politics": ("political_parties", "campaign_merchandise", "advocacy"),
    "sexuality": ("dating", "adult_products", "lgbtq_services"),
    "minors": ("kids_apps", "school_supplies_for_kids", "teen_fashion"),
}


@dataclass(frozen=True)
class Category:
    id: str          # "sports/running_shoes"
    top: str         # "sports"
    leaf: str        # "running_shoes"
    sensitive: bool

    @property
    def label(self) -> str:
        return self.leaf.replace("_", " ")


class Taxonomy:
    """Immutable lookup over the category tree; build once and pass it around."""

    def __init__(self, tree: dict[str, tuple[str, ...]] | None = None) -> None:
        tree = tree or _TREE
        self._by_id = {
            f"{top}/{leaf}": Category(f"{top}/{leaf}", top, leaf, top in SENSITIVE_TOPS)
            for top, leaves in tree.items()
            for leaf in leaves
        }
        self._tops = tuple(tree)

    def __contains__(self, category_id: str) -> bool:
        return category_id in self._by_id or category_id in self._tops

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, category_id: str) -> Category:
        try:
            return self._by_id[category_id]
        except KeyError:
            leaf = category_id.split("/")[-1]
            close = [c for c in self._by_id if leaf and leaf in c][:3] or difflib.get_close_matches(
                category_id, list(self._by_id), n=3, cutoff=0.75)
            hint = f"; did you mean {', '.join(close)}?" if close else "; run 'sightline campaigns categories' to list them"
            raise KeyError(f"unknown category {category_id!r}{hint}") from None

    @property
    def tops(self) -> tuple[str, ...]:
        return self._tops

    def leaves(self, *, include_sensitive: bool = False) -> list[Category]:
        return [c for c in self._by_id.values() if include_sensitive or not c.sensitive]

    def is_sensitive(self, category_id: str) -> bool:
        """True for a sensitive leaf or top; unknown ids are not sensitive (validate them separately)."""
        top = category_id.split("/", 1)[0]
        return top in SENSITIVE_TOPS
