"""Serving speed: HTTP latency and throughput of `litelora serve`, and merged-set vs plain-backbone forward time.

    litelora serve --port 8000 &   python benchmarks/serve_latency.py --url http://127.0.0.1:8000

Requests are sent one at a time (latency, not concurrency), with batch 1 and batch 32; medians of the model
forward are taken in this process on the same texts. Prints a markdown table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import time

import requests
import torch

from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import load_backbone
from pipeline.serving.predictor import Predictor
from pipeline.settings import connection, load_settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def http(url: str, texts: list[str], batch: int, requests_n: int) -> dict:
    session, times = requests.Session(), []
    for i in range(requests_n):
        chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
        start = time.perf_counter()
        session.post(f"{url}/predict", json={"texts": chunk}, timeout=60).raise_for_status()
        times.append(time.perf_counter() - start)
    return {
        "p50_ms": 1000 * percentile(times, 0.5),
        "p99_ms": 1000 * percentile(times, 0.99),
        "texts_per_s": batch * len(times) / sum(times),
    }


@torch.no_grad()
def forward_ms(model, tokenizer, texts: list[str], max_length: int, repeats: int) -> float:
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    texts = [t for task in split_wordnet20(1993, "quick") for t in task.test_inputs]
    predictor = Predictor.from_registry(connection(load_settings()))
    loaded = load_backbone(predictor.model.config.backbone)
    plain, tokenizer = loaded.network, loaded.tokenizer
    length = predictor.model.config.backbone.max_length
    rows = []
    for batch in (1, 32):
        served = http(args.url, texts, batch, args.requests if batch == 1 else args.requests // 4)
        merged = forward_ms(predictor.model.backbone, tokenizer, texts[:batch], length, 50)
        base = forward_ms(plain, tokenizer, texts[:batch], length, 50)
        rows.append(
            f"| {batch} | {served['p50_ms']:.1f} | {served['p99_ms']:.1f} | {served['texts_per_s']:.0f} | "
            f"{merged:.2f} | {base:.2f} | {merged / base:.3f} |"
        )
    print(f"v{predictor.version}, {torch.get_num_threads()} torch threads\n")
    print(
        "| batch | HTTP p50 (ms) | HTTP p99 (ms) | texts/s | merged forward (ms) | plain backbone (ms) | ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
