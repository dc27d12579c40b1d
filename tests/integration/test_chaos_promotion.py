"""Two promoters race for `current` on the real stack: SeaweedFS's conditional create decides, MLflow follows."""

import time

import pytest

from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry
from tests.promotion_race import race

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ROUNDS = 50


def test_two_promoters_on_one_parent_for_fifty_rounds_one_wins_each_and_current_never_skips_a_parent(
    conn, chaos_report
):
    lineage = Lineage(conn)
    versions = [
        lineage.register(f"s3://{conn.bucket}/sets/{i}", None, {}).version for i in range(1 + 2 * ROUNDS)
    ]
    promoters = [Registry.connect(conn), Registry.connect(conn)]  # a client each, as two watchers have
    started = time.monotonic()
    losers = race(promoters, versions, ROUNDS)
    chain = promoters[0].pointer.links()
    chaos_report(
        case=f"two promoters on one parent, {ROUNDS} rounds (real SeaweedFS + MLflow)",
        expected="exactly one wins each round; the loser is marked superseded; current never skips a parent",
        observed=f"{ROUNDS} rounds, one winner each, {len(losers)} superseded; chain of {len(chain)} links, "
        f"each from the last one's target; the alias on v{chain[-1].to_version}; "
        f"{(time.monotonic() - started) / ROUNDS:.2f} s a round",
    )
