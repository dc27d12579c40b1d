"""Per-class accuracy along a lineage: what a version's manifest carries and what `lineage --classes` shows."""

from mlflow.utils.validation import _validate_metric_name

from pipeline.learn.class_accuracy import ClassHistory
from pipeline.registry.lineage import metric_key


def test_a_parent_registered_before_the_record_is_padded_so_stages_stay_aligned():
    old_parent = ClassHistory.from_metrics({"correct": [[3]], "counts": [4]})  # no per-class record
    history = old_parent.extended({"a": [3, 4], "b": [1, 2]}, [{"a": [2, 4]}, {"a": [2, 4], "b": [2, 2]}], 2)
    assert history.stages == [{}, {"a": [3, 4], "b": [1, 2]}]
    assert history.to_metrics()["frozen_classes"][-1] == {"a": [2, 4], "b": [2, 2]}


def test_rows_show_each_class_from_the_stage_that_brought_it_with_the_frozen_encoder_beside_it():
    history = ClassHistory(
        stages=[{"a": [3, 4]}, {"a": [2, 4], "b": [1, 2]}],
        frozen=[{"a": [4, 4]}, {"a": [1, 4], "b": [2, 2]}],
    )
    assert history.rows() == [
        {"class": "a", "accuracy": [0.75, 0.5], "frozen_accuracy": 0.25, "rows": 4},
        {"class": "b", "accuracy": [None, 0.5], "frozen_accuracy": 1.0, "rows": 2},
    ]
    assert history.latest_metrics() == {
        "class_accuracy/a": 0.5,
        "class_accuracy/b": 0.5,
        "frozen_class_accuracy/a": 0.25,
        "frozen_class_accuracy/b": 1.0,
    }


def test_any_class_name_becomes_a_metric_key_mlflow_accepts_and_no_two_names_share_one():
    names = [
        "T-shirt/top",
        "noun.animal",
        "a:b é",
        "..",
        "a//b",
        "",
        "x?*",
        "a?b",
        "a*b",
        "x" * 300,
        "x" * 301,
    ]
    keys = [metric_key(f"class_accuracy/{name}") for name in names]
    for key in keys:
        _validate_metric_name(key)  # raises on a key MLflow would refuse (characters, paths)
        assert key.startswith("class_accuracy/") and len(key) <= 250  # MLflow's longest key
    assert len(set(keys)) == len(keys)
    assert (
        metric_key("class_accuracy/noun.animal") == "class_accuracy/noun.animal"
    )  # a valid name is kept as is
