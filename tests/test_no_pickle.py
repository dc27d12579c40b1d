"""Nothing the pipeline reads from a bucket, a drop or a manifest is ever unpickled: pinned on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNPICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
# Ray loads these from storage with (cloud)pickle: tuner.pkl, trainer.pkl, experiment state's pickled fields.
RAY_STATE_LOADERS = ("Tuner.restore", "Trainer.restore", "ExperimentAnalysis")


def _violations(path: Path) -> list[str]:
    tree, found = ast.parse(path.read_text()), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"imports {m}" for m in modules if m.split(".")[0] in UNPICKLERS]
        if not isinstance(node, ast.Call):
            continue
        name, keywords = ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}
        if name == "torch.load" and keywords.get("weights_only") != "True":
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if name == "AutoModel.from_pretrained" and keywords.get("use_safetensors") != "True":
            found.append(f"line {node.lineno}: from_pretrained may load a pickled .bin")
        if name.endswith(RAY_STATE_LOADERS):
            found.append(f"line {node.lineno}: {name} unpickles Ray state from storage")
        if keywords.get("allow_pickle") == "True":
            found.append(f"line {node.lineno}: allow_pickle=True")
    return [f"{path.relative_to(ROOT)}: {v}" for v in found]


def test_no_code_imports_an_unpickler_or_loads_weights_that_could_be_pickles():
    sources = [*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
    assert len(sources) > 40
    assert [v for path in sorted(sources) for v in _violations(path)] == []
