"""`current` as a compare-and-set over a chain of create-once links (registry/pointer.py), on the fakes."""

import pytest

from pipeline.orchestrator.promotion import promote_if_parent_current
from pipeline.orchestrator.rollback import rollback
from pipeline.registry.lineage import LineageError
from pipeline.registry.pointer import CurrentPointer
from tests.promotion_race import race


def register(lineage, n: int) -> list[str]:
    return [lineage.register(f"s3://b/sets/{i}", None, {}).version for i in range(n)]


def test_of_two_promoters_on_the_same_parent_exactly_one_wins_every_round_and_the_chain_skips_no_parent(
    registry,
):
    losers = race([registry, registry], register(registry.lineage, 101), rounds=50)
    assert len(losers) == 50


def test_a_move_that_died_between_its_link_and_the_alias_is_completed_by_the_next_reader(registry):
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    pointer = CurrentPointer(registry.bucket, registry.lineage)
    pointer._append(pointer._head(), v2, "promote", "died before the alias")  # the crash: the link only
    assert registry.lineage.current().version == v1
    assert registry.current().version == v2, "the chain is the truth"
    assert registry.lineage.current().version == v2 and registry.lineage.mirrored_link() == 1
    assert [m["to_version"] for m in registry.lineage.moves()] == [v1], "a repair is not a new move"


def test_a_move_of_the_alias_in_the_mlflow_ui_is_adopted_into_the_chain_and_audited(registry):
    v1, v2, v3 = register(registry.lineage, 3)
    registry.pointer.move(v1, kind="promote", reason="first")
    registry.pointer.move(v2, kind="promote", reason="second")
    registry.lineage.alias = v1  # a user moves `current` back in the MLflow UI
    assert registry.current().version == v1
    assert [(link.kind, link.from_version, link.to_version) for link in registry.pointer.links()][-1] == (
        "mlflow-ui",
        v2,
        v1,
    )
    assert registry.lineage.moves()[-1]["kind"] == "mlflow-ui"
    assert not promote_if_parent_current(registry, v3, v2, "trained on v2"), "v2 is no longer current"


def test_a_lineage_from_before_the_chain_keeps_its_current(registry):
    (v1,) = register(registry.lineage, 1)
    registry.lineage.alias = v1  # what an older release left: an alias and no chain
    assert registry.current().version == v1
    assert [(link.kind, link.seq) for link in registry.pointer.links()] == [("adopt", 0)]


def test_a_rollback_moves_current_whatever_it_points_at_and_refuses_a_missing_version(registry):
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    registry.pointer.move(v2, kind="promote", reason="second")
    move = registry.pointer.move(v1, kind="rollback", reason="v2 misbehaves")
    assert (move.from_version, move.to_version) == (v2, v1) and registry.current().version == v1
    with pytest.raises(LineageError, match="does not exist"):
        registry.pointer.move("99", kind="rollback", reason="")
    assert len(registry.pointer.links()) == 3


def test_a_writer_overtaken_while_it_mirrors_leaves_the_alias_on_the_newest_link(registry):
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    stale = registry.pointer.links()[-1]
    registry.pointer.move(v2, kind="promote", reason="second")
    registry.pointer._mirror(stale, record=False)  # a slow writer's late write for link 0
    assert registry.lineage.current().version == v2 and registry.lineage.mirrored_link() == 1


def test_a_reader_that_may_not_write_still_gets_the_current_a_writer_would_settle_on(registry, monkeypatch):
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    registry.pointer.move(v2, kind="promote", reason="second")
    registry.lineage.alias = v1  # moved in the MLflow UI

    def refused(*args, **kwargs):
        raise LineageError("MLflow at http://mlflow:5000: cannot move alias current: PERMISSION_DENIED")

    monkeypatch.setattr(registry.lineage, "mirror_current", refused)
    monkeypatch.setattr(registry.bucket, "put_if_absent", refused)
    assert registry.current().version == v1
    assert registry.current(reconcile=False).version == v1
    assert len(registry.pointer.links()) == 2, "nothing was written"


def test_a_version_deleted_under_current_is_one_clear_error_and_a_rollback_repairs_it(registry, monkeypatch):
    monkeypatch.setattr(registry.sets, "verify", lambda set_id: None)  # these versions have no files
    monkeypatch.setattr(registry.sets, "set_id_from_uri", lambda uri: uri)
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    registry.pointer.move(v2, kind="promote", reason="second")
    registry.lineage.version_list = [v for v in registry.lineage.version_list if v.version != v2]
    registry.lineage.alias = None  # MLflow drops the alias with the version
    with pytest.raises(LineageError, match="no longer has"):
        registry.current()
    assert rollback(registry, v1, reason="v2 was deleted").to_version == v1
    assert registry.current().version == v1


def test_reading_current_again_lists_no_part_of_the_chain(registry, monkeypatch):
    v1, v2 = register(registry.lineage, 2)
    registry.pointer.move(v1, kind="promote", reason="first")
    other = CurrentPointer(registry.bucket, registry.lineage)  # another process's view of the same lineage
    assert registry.current().version == v1 and other.version() == v1

    def listed(prefix):
        raise AssertionError(f"listed {prefix}: a steady read checks one key, however long the chain")

    monkeypatch.setattr(registry.bucket, "list", listed)
    other.move(v2, kind="promote", reason="second")
    assert registry.current().version == v2, (
        "a link another writer appended is found by probing past the last"
    )
