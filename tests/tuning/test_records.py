"""A resumed search trusts only trial records this service sealed for this search and configuration; anything
else found under its prefix (planted, edited, another installation's, a pickle) is ignored and said so."""

import pickle
import stat

import pytest

from pipeline.registry.service_key import ServiceKey, WeakStateKey
from pipeline.settings import Settings
from pipeline.tuning.attempt import ResumedASHA
from pipeline.tuning.pareto import TrialRow
from pipeline.tuning.records import SearchRecords, TrialRecord
from pipeline.tuning.space import SearchSpace
from tests.fakes import MemoryBucket

KEY = ServiceKey(b"k" * 64)
CONFIGS = SearchSpace().samples(4, seed=0)


def _record(slot: int, objective: float = 0.8) -> TrialRecord:
    row = TrialRow(f"t{slot}", CONFIGS[slot], "finished", objective, 0.81, 0.9, 1, 3)
    return TrialRecord(slot, row, [(1, 0.5), (2, 0.7), (3, objective)])


def _records(bucket, search="search-a", key=KEY, log=None):
    return SearchRecords(bucket, search, key, log or (lambda _: None))


class _Payload:
    def __reduce__(self):
        return (print, ("the payload ran",))


def test_a_planted_or_edited_trial_record_is_ignored_and_its_trial_runs_again():
    bucket, said = MemoryBucket(), []
    ours = _records(bucket, log=said.append)
    ours.write(_record(0))
    _records(bucket, key=ServiceKey(b"x" * 64)).write(_record(1))  # another installation's key
    ours.write(_record(2))
    key2 = f"{ours.prefix}0002.json"
    bucket.put(key2, bucket.get(key2).replace(b"0.8", b"0.99"))  # a better score, edited in
    bucket.put(f"{ours.prefix}0003.json", pickle.dumps(_Payload()))
    bucket.put(f"{ours.prefix}tuner.pkl", pickle.dumps(_Payload()))
    bucket.put(f"{ours.prefix}0001.json.big", b" " * 100_000)

    found = ours.read(CONFIGS)

    assert list(found) == [0]
    assert found[0].row == _record(0).row and found[0].history == _record(0).history
    assert len(said) == 5 and all(line.startswith("ignoring s3://") for line in said)
    assert sum("MAC does not verify" in line for line in said) == 3


def test_a_record_of_another_search_or_configuration_is_not_taken():
    bucket, said = MemoryBucket(), []
    _records(bucket, "search-a").write(_record(0))
    theirs = bucket.get("tune/search-a/trials/0000.json")
    bucket.put("tune/search-b/trials/0000.json", theirs)  # copied to another search
    bucket.put("tune/search-a/trials/0001.json", theirs)  # copied to another slot
    assert _records(bucket, "search-b", log=said.append).read(CONFIGS) == {}
    assert list(_records(bucket, "search-a", log=said.append).read(CONFIGS)) == [0]
    assert len(said) == 2 and all("another search or configuration" in line for line in said)


def test_the_state_key_is_made_once_private_and_kept(tmp_path):
    first = ServiceKey.load(Settings(home=tmp_path))
    assert stat.S_IMODE((tmp_path / "state-key").stat().st_mode) == 0o600
    assert ServiceKey.load(Settings(home=tmp_path)) == first
    assert [p.name for p in tmp_path.iterdir()] == ["state-key"]
    assert "secret=" not in repr(first)


def test_a_state_key_from_the_environment_wins_and_a_short_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LITELORA_STATE_KEY", "s" * 40)
    assert ServiceKey.load(Settings(home=tmp_path)) == ServiceKey(b"s" * 40)
    assert not (tmp_path / "state-key").exists()
    monkeypatch.setenv("LITELORA_STATE_KEY", "short")
    with pytest.raises(WeakStateKey, match="at least 32"):
        ServiceKey.load(Settings(home=tmp_path))


def test_a_search_draws_the_same_configurations_every_time_within_its_ranges():
    space = SearchSpace()
    configs = space.samples(8, seed=3)
    assert configs == space.samples(8, seed=3) != space.samples(8, seed=4)
    for config in configs:
        assert list(config) == space.knobs() and config["rank"] in (4, 8, 16)
        assert 0.05 <= config["sparsity"] <= 2.0 and 5e-4 <= config["lr"] <= 5e-3


def test_a_resumed_search_cuts_new_trials_against_what_the_earlier_trials_reported():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    def scheduler():
        asha = ResumedASHA(metric="objective", mode="max", max_t=4, grace_period=1, reduction_factor=2)
        asha.on_trial_add(None, SimpleNamespace(trial_id="new"))
        return asha

    weak = {"training_iteration": 1, "objective": 0.1}
    fresh, resumed = scheduler(), scheduler()
    resumed.replay(_record(0))
    assert fresh.on_trial_result(None, SimpleNamespace(trial_id="new"), weak) == TrialScheduler.CONTINUE
    assert resumed.on_trial_result(None, SimpleNamespace(trial_id="new"), weak) == TrialScheduler.STOP
