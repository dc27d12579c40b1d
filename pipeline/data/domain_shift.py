"""Split-Domains-27: a class-incremental text stream whose domain changes, 9 tasks × 3 classes from three kinds of
real text, labels global (every class named with its domain, so no two domains share a label).

nouns   WordNet 3.0 noun synsets (lemmas + gloss) by supersense (noun.artifact, …): a dictionary's nouns
verbs   WordNet 3.0 verb synsets (lemmas + gloss) by supersense (verb.motion, …): the same dictionary's verbs
debian  Debian bookworm package short descriptions by archive section (debian.net, debian.games, …): software
        jargon in a few words, what MiniLM knows least; identical descriptions dropped, the package name not shown

Each domain gives its 9 largest classes. Within a domain, the ordering seeds which classes share a task (the class
permutation of `class_order`, per domain); the arrangement of the domains is fixed by the stream key:

domains              blocks: nouns t0–t2, verbs t3–t5, debian t6–t8 (the domain changes twice)
domains-alternating  the domains in turn: nouns, verbs, debian, nouns, … (the domain changes at every task)

Both keys read the same rows, so an ordering gives the same nine tasks in a different order. The ci (16 train / 8
test per class) and quick (150 / 100) tiers come from a snapshot shipped in pipeline/data/assets, since Debian's
list changes with every point release; its metadata records the SHA-256 of every file it was derived from
(`recorded_sources`, checked against this machine's by `python -m pipeline.data.domain_shift --check`).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import random
import subprocess
from collections import defaultdict
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.class_split import class_order, shipped_tier, split_by_class
from pipeline.data.wordnet import DATA_NOUN, ORDERINGS, largest_classes, parse_data_noun, parse_synsets
from pipeline.learn.task import Task

DATA_VERB = Path("/usr/share/wordnet/data.verb")
APT_PACKAGES = "/var/lib/apt/lists/*_bookworm_main_binary-*_Packages.lz4"
POOL_FILE = "split_domains27_quick.parquet"
POOL_SHA256 = "d6943d2683dd13da55d087e753ef9eb1693ba2cbc8bb20b1d1074f9d83927f08"
"""SHA-256 of the shipped snapshot: the reports name it, and a regenerated snapshot must change it."""
SOURCES_KEY = b"litelora.sources"
DOMAINS = ("nouns", "verbs", "debian")
"""In the order the blocks arrive."""
CLASSES_PER_DOMAIN, CLASSES_PER_TASK = 9, 3
TIERS = {"ci": (16, 8), "quick": (150, 100)}  # train / test examples per class
ARRANGEMENTS = ("blocks", "alternating")
TOPICAL_SECTIONS = (
    *("utils", "net", "science", "admin", "games", "x11", "text", "sound"),
    *("graphics", "fonts", "web", "math", "mail", "editors", "database", "video"),
)
"""The archive sections that name what a package is for (not libs, devel, python, …: how it is packaged)."""

# Lexicographer file numbers of WordNet 3.0 verbs (lexnames(5WN)).
VERB_LEXNAMES = {
    29: "verb.body",
    30: "verb.change",
    31: "verb.cognition",
    32: "verb.communication",
    33: "verb.competition",
    34: "verb.consumption",
    35: "verb.contact",
    36: "verb.creation",
    37: "verb.emotion",
    38: "verb.motion",
    39: "verb.perception",
    40: "verb.possession",
    41: "verb.social",
    42: "verb.stative",
    43: "verb.weather",
}


def parse_data_verb(path: Path = DATA_VERB) -> dict[str, list[str]]:
    """Supersense → texts ("lemma, lemma: gloss") from a WordNet 3.0 data.verb file."""
    return parse_synsets(path, VERB_LEXNAMES)


def apt_packages_list() -> Path:
    found = sorted(glob.glob(APT_PACKAGES))
    if not found:
        raise FileNotFoundError(f"no apt package list matches {APT_PACKAGES}: run apt-get update on bookworm")
    return Path(found[0])


def parse_packages(path: Path) -> dict[str, list[str]]:
    """Section → distinct short descriptions (first seen wins, case-insensitive) from an lz4 apt Packages list."""
    text = subprocess.run(["lz4cat", str(path)], capture_output=True, check=True, text=True).stdout
    by_class: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        section, description = fields.get("Section", ""), fields.get("Description")
        if section in TOPICAL_SECTIONS and description and description.lower() not in seen:
            seen.add(description.lower())
            by_class[f"debian.{section}"].append(description)
    return by_class


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_files() -> dict[str, Path]:
    """Domain → the file on this machine its rows are read from."""
    return {"nouns": DATA_NOUN, "verbs": DATA_VERB, "debian": apt_packages_list()}


def build_pool(sources: dict[str, Path], train: int, test: int, seed: int = 0) -> pa.Table:
    """Columns text, label, domain, split: a seeded sample of `train` + `test` rows of each domain's largest
    classes, with the sources' SHA-256 in the table's metadata."""
    readers = {"nouns": parse_data_noun, "verbs": parse_data_verb, "debian": parse_packages}
    rows = {"text": [], "label": [], "domain": [], "split": []}
    rng = random.Random(seed)
    for domain in DOMAINS:
        by_class = readers[domain](sources[domain])
        for label in sorted(largest_classes(by_class, CLASSES_PER_DOMAIN)):
            for i, text in enumerate(rng.sample(by_class[label], train + test)):
                rows["text"].append(text)
                rows["label"].append(label)
                rows["domain"].append(domain)
                rows["split"].append("train" if i < train else "test")
    recorded = {domain: {"path": str(path), "sha256": sha256(path)} for domain, path in sources.items()}
    return pa.table(rows).replace_schema_metadata({SOURCES_KEY: json.dumps(recorded, sort_keys=True)})


def shipped_pool_path() -> Path:
    return Path(str(resources.files("pipeline.data.assets").joinpath(POOL_FILE)))


def recorded_sources(path: Path | None = None) -> dict[str, dict[str, str]]:
    """Domain → {path, sha256} of the file the snapshot was derived from, as its metadata records it."""
    metadata = pq.read_schema(path or shipped_pool_path()).metadata or {}
    return json.loads(metadata[SOURCES_KEY])


def check_sources(recorded: dict[str, dict[str, str]]) -> dict[str, str]:
    """Domain → "same", "differs" or "absent": this machine's source file against the recorded hash."""
    verdicts = {}
    for domain, source in recorded.items():
        path = Path(source["path"])
        verdicts[domain] = (
            "absent" if not path.exists() else ("same" if sha256(path) == source["sha256"] else "differs")
        )
    return verdicts


def arrange(tasks_by_domain: dict[str, list[Task]], arrangement: str) -> list[Task]:
    """The domains' tasks in blocks (all of one domain, then the next) or in turn (one task of each, repeated)."""
    if arrangement == "blocks":
        return [t for domain in DOMAINS for t in tasks_by_domain[domain]]
    if arrangement == "alternating":
        return [t for turn in zip(*(tasks_by_domain[d] for d in DOMAINS), strict=True) for t in turn]
    raise ValueError(f"unknown arrangement {arrangement!r}; choose {' or '.join(ARRANGEMENTS)}")


def split_domains(
    ordering: int = ORDERINGS[0], tier: str = "quick", arrangement: str = "blocks"
) -> list[Task]:
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose ci or quick (the stream ships as a snapshot)")
    table = shipped_tier(POOL_FILE, *TIERS[tier])
    texts, labels, domains, splits = (table[c].to_pylist() for c in ("text", "label", "domain", "split"))
    by_domain = {}
    for domain in DOMAINS:
        mine = [i for i, d in enumerate(domains) if d == domain]
        classes = class_order(sorted({labels[i] for i in mine}), ordering)
        by_domain[domain] = split_by_class(
            [texts[i] for i in mine],
            [labels[i] for i in mine],
            [splits[i] for i in mine],
            classes,
            CLASSES_PER_TASK,
            f"domains-{ordering}-{domain}",
            {"ordering": ordering, "tier": tier, "domain": domain, "arrangement": arrangement},
        )
    return arrange(by_domain, arrangement)


def split_domains_alternating(ordering: int = ORDERINGS[0], tier: str = "quick") -> list[Task]:
    return split_domains(ordering, tier, "alternating")


def write_shipped_pool(target_dir: Path) -> Path:
    """Regenerate the shipped snapshot from this machine's wordnet-base and apt list (maintainers only: update
    POOL_SHA256 and the NOTICE after)."""
    train, test = TIERS["quick"]
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / POOL_FILE
    pq.write_table(build_pool(source_files(), train, test), path, compression="zstd")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Split-Domains-27's snapshot: check its sources, or rebuild it."
    )
    parser.add_argument("--write", type=Path, metavar="DIR", help="regenerate the snapshot into DIR")
    args = parser.parse_args()
    if args.write:
        path = write_shipped_pool(args.write)
        print(f"{path}: sha256 {sha256(path)}")
        return
    recorded = recorded_sources()
    print(f"{shipped_pool_path()}: sha256 {sha256(shipped_pool_path())} (pinned {POOL_SHA256})")
    for domain, verdict in check_sources(recorded).items():
        print(
            f"{domain}: {recorded[domain]['path']} {recorded[domain]['sha256']} – this machine's: {verdict}"
        )


if __name__ == "__main__":
    main()
