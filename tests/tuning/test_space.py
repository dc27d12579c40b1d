"""The search space: defaults that work, and every contradiction refused with a message naming the field."""

import json

import pytest

from pipeline.tuning.space import InvalidSearchSpace, SearchSpace


def test_default_space_searches_rank_sparsity_temperature_init_logit_and_lr():
    space = SearchSpace()
    assert space.knobs() == ["rank", "sparsity", "temperature", "init_logit", "lr"]
    samplers = space.to_tune()
    assert set(samplers) == set(space.knobs())
    assert samplers["rank"].categories == [4, 8, 16]


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"rank": []}, "rank"),
        ({"rank": [0, 8]}, "rank"),
        ({"sparsity": {"low": 2.0, "high": 0.1}}, "sparsity"),
        ({"lr": {"low": 0.0, "high": 0.01, "log": True}}, "lr"),
        ({"init_logit": {"low": -1.0, "high": 1.0}}, "init_logit"),
        (
            {"rank": None, "sparsity": None, "temperature": None, "init_logit": None, "lr": None},
            "nothing to search",
        ),
        ({"epochs": [1, 2]}, "epochs"),
    ],
)
def test_empty_or_contradictory_spaces_are_refused_with_the_field_named(data, names):
    with pytest.raises(InvalidSearchSpace, match=names):
        SearchSpace.parse(data)


def test_a_fixed_range_is_passed_to_tune_as_a_constant():
    space = SearchSpace.parse({"sparsity": {"low": 0.5, "high": 0.5}})
    assert space.to_tune()["sparsity"] == 0.5


def test_space_files_override_the_defaults_and_null_fixes_a_knob(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"rank": [8], "lr": None}))
    space = SearchSpace.from_file(path)
    assert space.rank == [8] and "lr" not in space.knobs()
    path.write_text("{not json")
    with pytest.raises(InvalidSearchSpace, match="cannot read"):
        SearchSpace.from_file(path)
