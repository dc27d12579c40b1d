"""Split-WordNet-20 from the shipped parquet: 5 tasks × 4 disjoint classes, seeded orderings, tier sizes."""

import pytest

from pipeline.data.wordnet import ORDERINGS, split_wordnet20


@pytest.mark.parametrize("tier, train, test", [("ci", 32, 16), ("quick", 150, 100)])
def test_tiers_have_the_documented_examples_per_class(tier, train, test):
    tasks = split_wordnet20(ORDERINGS[0], tier)
    assert len(tasks) == 5
    for task in tasks:
        assert len(task.classes) == 4
        assert len(task.train_inputs) == 4 * train and len(task.test_inputs) == 4 * test
    classes = [c for t in tasks for c in t.classes]
    assert len(set(classes)) == 20


def test_orderings_permute_classes_into_different_tasks_deterministically():
    a, b = split_wordnet20(1993, "ci"), split_wordnet20(1995, "ci")
    assert [t.classes for t in a] != [t.classes for t in b]
    assert [t.classes for t in a] == [t.classes for t in split_wordnet20(1993, "ci")]


def test_train_and_test_texts_do_not_overlap():
    for task in split_wordnet20(ORDERINGS[0], "quick"):
        assert not set(task.train_inputs) & set(task.test_inputs)
