"""Two promoters racing for `current` round after round: shared by the fake-backed and the real-stack test."""

import itertools
import threading

from pipeline.orchestrator.promotion import promote_if_parent_current


def race(promoters: list, versions: list[str], rounds: int) -> list[str]:
    """Promote versions[0] first, then each round start two promoters on the same parent at one barrier; assert
    exactly one wins each round and the chain never skips a parent. Returns the losers."""
    first = promoters[0]
    assert promote_if_parent_current(first, versions[0], None, "first set")
    losers = []
    for r in range(rounds):
        parent, start, won = first.pointer.version(), threading.Barrier(len(promoters)), {}

        def promote(registry, version, parent=parent, start=start, won=won, r=r):
            start.wait()
            won[version] = promote_if_parent_current(registry, version, parent, f"round {r}")

        threads = [
            threading.Thread(target=promote, args=(registry, versions[1 + len(promoters) * r + i]))
            for i, registry in enumerate(promoters)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(won.values()) == [False] * (len(promoters) - 1) + [True], f"round {r}: {won}"
        losers += [v for v, ok in won.items() if not ok]
    chain = first.pointer.links()
    assert [link.seq for link in chain] == list(range(rounds + 1))
    assert all(b.from_version == a.to_version for a, b in itertools.pairwise(chain)), (
        "every move starts where the last one ended"
    )
    assert first.lineage.current().version == chain[-1].to_version, "the alias mirrors the chain"
    for loser in losers:
        assert "not its parent" in first.lineage.get(loser).tags["superseded"]
    return losers
