"""The lexicon against the simulator's own vocabulary: every spoken intent maps to its true
category, every sensitive intent and object label is recognised (and so dropped)."""

from __future__ import annotations

import numpy as np

from simulation import WorldConfig, build_world, sample_contexts
from streaming import LexiconMatcher


def test_lexicon_on_simulated_intents_and_objects():
    world = build_world(WorldConfig(n_users=500, n_products=500, n_advertisers=10, n_campaigns=20, n_creatives=60))
    batch = sample_contexts(world, 3000, seed=2)
    m = LexiconMatcher()
    spoken = np.where(batch.intent_category >= 0)[0]
    hits = sum(world.categories[batch.intent_category[i]] in m.match(batch.intent_text[i]).categories[:1] for i in spoken)
    assert hits / len(spoken) >= 0.98
    sensitive = np.where(batch.intent_sensitive >= 0)[0]
    assert all(m.match(batch.intent_text[i]).sensitive and not m.match(batch.intent_text[i]).categories for i in sensitive)
    for label, is_sensitive in zip(world.object_vocab, world.object_sensitive):
        assert bool(m.match(label).sensitive) == bool(is_sensitive) or not is_sensitive, label
    leaf_objects = [(world.object_vocab[i], c) for i, c in enumerate(world.categories) if i < len(world.object_vocab)]
    mapped = sum(c in m.match(label).categories for label, c in leaf_objects if not m.is_sensitive(c))
    assert mapped / sum(not m.is_sensitive(c) for _, c in leaf_objects) >= 0.9
