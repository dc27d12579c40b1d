"""Two text streams nobody tuned on, run as a user would: one drop at a time through `litelora train --register`,
scored through `litelora predict`, beside the frozen encoder with the same head and with nearest class mean.

    python benchmarks/heldout_streams.py [--streams verbs,debian] [--out benchmarks/reports]

- verbs: WordNet 3.0 verb synsets (lemmas + gloss) labelled with their supersense (verb.motion, …): the 12
  largest, 4 tasks × 3 classes, 150 train / 100 test each. Debian's `wordnet-base` (data.verb).
- debian: Debian bookworm package short descriptions labelled with their archive section (net, games, sound,
  …): 16 topical sections, 4 tasks × 4 classes, 150 train / 75 test each; identical descriptions dropped and the
  package name never shown. Software jargon in a few words: a domain MiniLM knows little about. Read from apt's
  package list (`/var/lib/apt/lists/*_Packages.lz4`, after `apt-get update`).

Each stream gets its own embedded stack (a fresh state directory, free ports), so nothing else is in its lineage.
Writes `<out>/heldout.md` and `<out>/heldout.json`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATA_VERB = Path("/usr/share/wordnet/data.verb")
SECTIONS = (
    "utils",
    "net",
    "science",
    "admin",
    "games",
    "x11",
    "text",
    "sound",
    "graphics",
    "fonts",
    "web",
    "math",
    "mail",
    "editors",
    "database",
    "video",
)
CLASS_SEED = 7  # not one of the benchmark orderings


def verb_pool() -> dict[str, list[str]]:
    by_class = defaultdict(list)
    for line in DATA_VERB.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  "):
            continue
        head, _, gloss = line.partition("|")
        fields = head.split()
        lemmas = [fields[4 + 2 * i].replace("_", " ") for i in range(int(fields[3], 16))]
        by_class[f"lexfile-{int(fields[1])}"].append(f"{', '.join(lemmas)}: {gloss.strip()}")
    return by_class


def debian_pool() -> dict[str, list[str]]:
    lists = sorted(glob.glob("/var/lib/apt/lists/*_main_binary-*_Packages*"))
    if not lists:
        raise FileNotFoundError("no apt package list: run apt-get update")
    text = subprocess.run(["lz4cat", lists[0]], capture_output=True, check=True, text=True).stdout
    by_class, seen = defaultdict(list), set()
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and not line.startswith(" ")
        )
        section, description = fields.get("Section"), fields.get("Description")
        if section in SECTIONS and description and description.lower() not in seen:
            seen.add(description.lower())
            by_class[section].append(description)
    return by_class


def drops(
    by_class: dict[str, list[str]],
    n_classes: int,
    per_task: int,
    train: int,
    test: int,
    name: str,
    root: Path,
) -> list[Path]:
    """Write one drop folder per task (train.parquet, test.parquet, task.json); classes in a seeded order."""
    rng = random.Random(CLASS_SEED)
    classes = sorted(sorted(by_class, key=lambda c: (-len(by_class[c]), c))[:n_classes])
    rng.shuffle(classes)
    folders = []
    for t in range(n_classes // per_task):
        folder = root / name / f"{name}-t{t}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = {"train": {"text": [], "label": []}, "test": {"text": [], "label": []}}
        for label in classes[t * per_task : (t + 1) * per_task]:
            texts = rng.sample(by_class[label], train + test)
            for split, part in (("train", texts[:train]), ("test", texts[train:])):
                rows[split]["text"] += part
                rows[split]["label"] += [label] * len(part)
        for split, data in rows.items():
            pq.write_table(pa.table(data), folder / f"{split}.parquet")
        (folder / "task.json").write_text(json.dumps({"name": folder.name}))
        folders.append(folder)
    return folders


def litelora(env: dict, *args: str) -> dict:
    done = subprocess.run(["litelora", *args, "--json"], env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"litelora {' '.join(args)} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def frozen_references(folders: list[Path]) -> dict:
    """Nearest class mean and the shipped head (ridge) on the frozen encoder, per stage."""
    from pipeline.baselines.ncm import run_ncm
    from pipeline.data.task_dataset import TaskDataset
    from pipeline.learn.config import TrainConfig
    from pipeline.learn.frozen import FeatureCache, frozen_reference

    tasks = [TaskDataset.from_dir(f).to_task() for f in folders]
    config = TrainConfig()
    same_head = frozen_reference(config, tasks, FeatureCache(config.backbone))
    ncm = run_ncm(tasks, config.backbone)
    return {
        "frozen_same_head": same_head.cil.summary() | {"head": config.head},
        "ncm_frozen": ncm.cil.summary(),
    }


def run_sequence(folders: list[Path]) -> dict:
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="litelora-heldout-") as home:
        env["LITELORA_HOME"] = home
        subprocess.run(["litelora", "up"], env=env, check=True, capture_output=True)
        try:
            stages, steps = [], []
            for t, folder in enumerate(folders):
                clock = time.time()
                step = litelora(env, "train", "--data", str(folder), "--register")
                steps.append(
                    {
                        k: step.get(k)
                        for k in (
                            "version",
                            "decision",
                            "active_adapters",
                            "promoted",
                            "frozen_final_accuracy",
                        )
                    }
                    | {"seconds": time.time() - clock}
                )
                correct, total = [], []
                for seen in folders[: t + 1]:
                    test = pq.read_table(seen / "test.parquet").to_pydict()
                    with tempfile.NamedTemporaryFile("w", suffix=".txt") as texts:
                        texts.write("\n".join(x.replace("\n", " ") for x in test["text"]))
                        texts.flush()
                        predicted = litelora(
                            env, "predict", "--file", texts.name, "--version", step["version"]
                        )
                    labels = [p["label"] for p in predicted["predictions"]]
                    correct.append(sum(a == b for a, b in zip(labels, test["label"], strict=True)))
                    total.append(len(labels))
                stages.append({"correct": correct, "counts": total, "accuracy": sum(correct) / sum(total)})
                print(
                    f"  {folder.name}: {step['decision']}, accuracy {100 * stages[-1]['accuracy']:.1f}",
                    flush=True,
                )
        finally:
            subprocess.run(["litelora", "down"], env=env, capture_output=True, check=False)
    accuracies = [s["accuracy"] for s in stages]
    return {
        "stages": stages,
        "steps": steps,
        "avg_accuracy": sum(accuracies) / len(accuracies),
        "final_accuracy": accuracies[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="verbs,debian")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()
    builders = {
        "verbs": lambda root: drops(verb_pool(), 12, 3, 150, 100, "verbs", root),
        "debian": lambda root: drops(debian_pool(), 16, 4, 150, 75, "debian", root),
    }
    report = {
        "command": "python " + " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "streams": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as root:
        for name in args.streams.split(","):
            print(f"{name}:", flush=True)
            folders = builders[name](Path(root))
            report["streams"][name] = frozen_references(folders) | run_sequence(folders)
            (args.out / "heldout.json").write_text(json.dumps(report, indent=2))  # after each stream
            (args.out / "heldout.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "# Held-out text streams (never tuned on)",
        "",
        f"Command: `{report['command']}`  ",
        "",
        (
            "Trained one drop at a time with `litelora train --register` (shipped defaults), scored with `litelora "
            "predict` on every seen task's test rows after each version. Class-incremental accuracy in %."
        ),
        "",
        "| stream | shipped defaults A | final | frozen, same head A | final | frozen NCM A | final | adapters kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in report["streams"].items():
        same, ncm = s["frozen_same_head"], s["ncm_frozen"]
        lines.append(
            f"| {name} | {100 * s['avg_accuracy']:.1f} | {100 * s['final_accuracy']:.1f} | "
            f"{100 * same['avg_accuracy']:.1f} | {100 * same['final_accuracy']:.1f} | "
            f"{100 * ncm['avg_accuracy']:.1f} | {100 * ncm['final_accuracy']:.1f} | "
            f"{s['steps'][-1]['active_adapters']} |"
        )
    lines += [
        "",
        "Decisions: "
        + "; ".join(
            f"{n}: " + " ".join(step["decision"] for step in s["steps"]) for n, s in report["streams"].items()
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
