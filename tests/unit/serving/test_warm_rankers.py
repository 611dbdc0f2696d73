"""Every model a request may ask for is loaded before the server reports SERVING."""

from serving._app import _warm_rankers


class _Rankers:
    def __init__(self):
        self.loaded = []

    def get(self, ref):
        self.loaded.append(ref)


class _Experiments:
    def __init__(self, refs=None, fail=False):
        self._refs, self._fail = refs or set(), fail

    def ranker_refs(self):
        if self._fail:
            raise ConnectionError("experiment store down")
        return self._refs


def test_default_alias_and_every_arm_ranker_are_loaded_once():
    rankers = _Rankers()
    _warm_rankers(rankers, "production", _Experiments({"candidate", "production", "xgboost-v3"}))
    assert sorted(rankers.loaded) == ["candidate", "production", "xgboost-v3"]


def test_a_down_experiment_store_still_preloads_the_default():
    rankers = _Rankers()
    _warm_rankers(rankers, "production", _Experiments(fail=True))
    assert rankers.loaded == ["production"]


def test_without_experiments_only_the_default_is_loaded():
    rankers = _Rankers()
    _warm_rankers(rankers, "production", None)
    assert rankers.loaded == ["production"]
