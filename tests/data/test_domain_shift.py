"""Split-Domains-27 from the shipped snapshot: three domains of 3 tasks × 3 classes, global labels, documented
arrangements, a snapshot that names the files it came from."""

import hashlib

import pytest

from pipeline.data.domain_shift import (
    DOMAINS,
    POOL_SHA256,
    check_sources,
    parse_data_verb,
    recorded_sources,
    shipped_pool_path,
    split_domains,
    split_domains_alternating,
)

DOMAIN_OF_LABEL = {"noun": "nouns", "verb": "verbs", "debian": "debian"}


@pytest.mark.parametrize("build", [split_domains, split_domains_alternating])
def test_labels_are_global_no_class_is_in_two_tasks_and_each_names_its_domain(build):
    tasks = build(1993, "ci")
    classes = [c for t in tasks for c in t.classes]
    assert len(tasks) == 9 and all(len(t.classes) == 3 for t in tasks)
    assert len(set(classes)) == len(classes) == 27
    for task in tasks:
        assert {DOMAIN_OF_LABEL[c.split(".")[0]] for c in task.classes} == {task.meta["domain"]}


def test_blocks_bring_nouns_then_verbs_then_debian_and_alternating_takes_them_in_turn():
    blocks = [t.meta["domain"] for t in split_domains(1993, "ci")]
    alternating = [t.meta["domain"] for t in split_domains_alternating(1993, "ci")]
    assert blocks == [d for d in DOMAINS for _ in range(3)] == ["nouns"] * 3 + ["verbs"] * 3 + ["debian"] * 3
    assert alternating == list(DOMAINS) * 3


def test_both_arrangements_hold_the_same_tasks_in_a_different_order():
    blocks, alternating = split_domains(1995, "ci"), split_domains_alternating(1995, "ci")
    assert sorted(t.classes for t in blocks) == sorted(t.classes for t in alternating)
    assert [t.classes for t in blocks] != [t.classes for t in alternating]


def test_an_ordering_builds_the_same_stream_every_time_and_another_ordering_regroups_classes():
    a = split_domains(1993, "ci")
    again = split_domains(1993, "ci")
    assert [(t.name, t.classes, t.train_inputs, t.test_labels) for t in a] == [
        (t.name, t.classes, t.train_inputs, t.test_labels) for t in again
    ]
    assert [t.classes for t in a] != [t.classes for t in split_domains(1995, "ci")]


@pytest.mark.parametrize("tier, train, test", [("ci", 16, 8), ("quick", 150, 100)])
def test_tiers_have_the_documented_examples_per_class_and_train_never_meets_test(tier, train, test):
    for task in split_domains(1993, tier):
        assert len(task.train_inputs) == 3 * train and len(task.test_inputs) == 3 * test
        assert not set(task.train_inputs) & set(task.test_inputs)


def test_the_shipped_snapshot_is_the_pinned_one_and_records_a_sha256_for_every_source():
    assert hashlib.sha256(shipped_pool_path().read_bytes()).hexdigest() == POOL_SHA256
    sources = recorded_sources()
    assert set(sources) == set(DOMAINS)
    assert sources["verbs"]["path"].endswith("data.verb") and sources["debian"]["path"].endswith(
        "Packages.lz4"
    )
    assert all(len(s["sha256"]) == 64 and int(s["sha256"], 16) >= 0 for s in sources.values())


def test_checking_the_sources_tells_a_same_file_from_a_changed_or_missing_one(tmp_path):
    same, changed = tmp_path / "same", tmp_path / "changed"
    same.write_bytes(b"data.noun as read")
    changed.write_bytes(b"a newer point release")
    recorded = {
        "nouns": {"path": str(same), "sha256": hashlib.sha256(b"data.noun as read").hexdigest()},
        "debian": {"path": str(changed), "sha256": hashlib.sha256(b"the list as read").hexdigest()},
        "verbs": {"path": str(tmp_path / "gone"), "sha256": "0" * 64},
    }
    assert check_sources(recorded) == {"nouns": "same", "debian": "differs", "verbs": "absent"}


def test_a_verb_synset_line_gives_its_lemmas_and_gloss_under_its_supersense(tmp_path):
    data_verb = tmp_path / "data.verb"
    data_verb.write_text(
        "  1 This software and database is being provided to you\n"
        "01835496 38 v 02 travel 0 go 0 001 @ 01835496 v 0000 01 + 08 00 | change location; move: "
        '"How fast does your new car go?"\n'
    )
    assert parse_data_verb(data_verb) == {
        "verb.motion": ['travel, go: change location; move: "How fast does your new car go?"']
    }
