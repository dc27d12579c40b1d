"""Split-WordNet-20: WordNet 3.0 noun synsets labelled with their supersense, cut into 5 tasks × 4 classes.

Input text = the synset's lemmas and its gloss; label = the lexicographer file (noun.artifact, …).
The quick tier (150 train / 100 test per class) ships in this package as parquet, so the demo and the
quick benchmark need no root; the full tier reads Debian's `wordnet-base` (/usr/share/wordnet/data.noun).
It is a real NLP task, not a standard continual-learning benchmark.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.class_split import class_order, shipped_tier, split_by_class
from pipeline.learn.task import Task

DATA_NOUN = Path("/usr/share/wordnet/data.noun")
POOL_FILE = "split_wordnet20_quick.parquet"
NUM_CLASSES, CLASSES_PER_TASK = 20, 4
ORDERINGS = (1993, 1995, 2000)  # the class-permutation seeds of the LiteLoRA experiments
TIERS = {"ci": (32, 16), "quick": (150, 100)}  # train / test examples per class; "full" = all, 80/20

# Lexicographer file numbers of WordNet 3.0 nouns (lexnames(5WN)).
NOUN_LEXNAMES = {
    3: "noun.Tops",
    4: "noun.act",
    5: "noun.animal",
    6: "noun.artifact",
    7: "noun.attribute",
    8: "noun.body",
    9: "noun.cognition",
    10: "noun.communication",
    11: "noun.event",
    12: "noun.feeling",
    13: "noun.food",
    14: "noun.group",
    15: "noun.location",
    16: "noun.motive",
    17: "noun.object",
    18: "noun.person",
    19: "noun.phenomenon",
    20: "noun.plant",
    21: "noun.possession",
    22: "noun.process",
    23: "noun.quantity",
    24: "noun.relation",
    25: "noun.shape",
    26: "noun.state",
    27: "noun.substance",
    28: "noun.time",
}


def parse_data_noun(path: Path = DATA_NOUN) -> dict[str, list[str]]:
    """Supersense → texts ("lemma, lemma: gloss") from a WordNet 3.0 data.noun file."""
    return parse_synsets(path, NOUN_LEXNAMES)


def parse_synsets(path: Path, lexnames: dict[int, str]) -> dict[str, list[str]]:
    """Supersense → texts ("lemma, lemma: gloss") from a WordNet 3.0 data file (data.noun, data.verb: a verb's
    frames follow its gloss's `|`, so the line head reads the same), `lexnames` naming the lexicographer files."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: install Debian's wordnet-base")
    by_class: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("  "):  # the licence header
                continue
            head, _, gloss = line.partition("|")
            fields = head.split()
            count = int(fields[3], 16)
            lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
            by_class[lexnames[int(fields[1])]].append(f"{', '.join(lemmas)}: {gloss.strip()}")
    return by_class


def largest_classes(by_class: dict[str, list[str]], n: int = NUM_CLASSES) -> list[str]:
    return sorted(by_class, key=lambda c: (-len(by_class[c]), c))[:n]


def build_pool(by_class: dict[str, list[str]], train: int, test: int, seed: int = 0) -> pa.Table:
    """A fixed seeded sample of `train` + `test` examples from each of the 20 largest classes."""
    rows = {"text": [], "label": [], "split": []}
    rng = random.Random(seed)
    for label in largest_classes(by_class):
        texts = rng.sample(by_class[label], train + test)
        for i, text in enumerate(texts):
            rows["text"].append(text)
            rows["label"].append(label)
            rows["split"].append("train" if i < train else "test")
    return pa.table(rows)


def load_pool(tier: str) -> pa.Table:
    """The examples of a tier as a table with columns text, label, split."""
    if tier == "full":
        by_class = parse_data_noun()
        rows = {"text": [], "label": [], "split": []}
        rng = random.Random(0)
        for label in largest_classes(by_class):
            texts = list(by_class[label])
            rng.shuffle(texts)
            cut = int(0.8 * len(texts))
            for i, text in enumerate(texts):
                rows["text"].append(text)
                rows["label"].append(label)
                rows["split"].append("train" if i < cut else "test")
        return pa.table(rows)
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose ci, quick or full")
    return shipped_tier(POOL_FILE, *TIERS[tier])


def split_wordnet20(ordering: int = ORDERINGS[0], tier: str = "quick") -> list[Task]:
    table = load_pool(tier)
    texts, labels, splits = (table[c].to_pylist() for c in ("text", "label", "split"))
    classes = class_order(sorted(set(labels)), ordering)
    return split_by_class(
        texts,
        labels,
        splits,
        classes,
        CLASSES_PER_TASK,
        f"wordnet-{ordering}",
        {"ordering": ordering, "tier": tier},
    )


def write_shipped_pool(target_dir: Path) -> Path:
    """Regenerate the shipped quick-tier parquet from Debian's data.noun (maintainers only)."""
    train, test = TIERS["quick"]
    path = target_dir / POOL_FILE
    pq.write_table(build_pool(parse_data_noun(), train, test), path, compression="zstd")
    return path
