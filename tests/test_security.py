"""Loading never runs code from a file: a scan of the source tree, and malicious pickles that must be refused.

The scan (ast, not grep) asserts: every ``torch.load`` passes ``weights_only=True``; no module imports a
pickle-like loader (pickle, dill, joblib, marshal, shelve, yaml...) except the embedded-data reader, whose
unpickler overrides ``find_class`` and is the only thing that unpickles; no ``eval``/``exec``, no
``np.load(allow_pickle=True)``, no shell; Hugging Face loads pass ``trust_remote_code=False``; config,
groups and checkpoint metadata files are read with ``json``.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import latentcc
from latentcc.plumbing.errors import CheckpointError, LatentccError

SRC = Path(latentcc.__file__).resolve().parent
EMBEDDED = SRC / "data" / "embedded.py"
UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "yaml",
                  "ruamel", "jsonpickle"}  # fmt: skip


def _trees() -> dict[Path, ast.Module]:
    return {p: ast.parse(p.read_text(), filename=str(p)) for p in sorted(SRC.rglob("*.py"))}


def _dotted(node: ast.AST) -> str:
    """'torch.load' for torch.load, 'np.load' for np.load, 'eval' for eval, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    return [(_dotted(n.func), n) for n in ast.walk(tree) if isinstance(n, ast.Call)]


def _kw(call: ast.Call, name: str) -> object:
    for k in call.keywords:
        if k.arg == name:
            return k.value.value if isinstance(k.value, ast.Constant) else "<not a literal>"
    return "<missing>"


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(SRC)}:{node.lineno}"


def test_every_torch_load_is_weights_only():
    found = []
    for path, tree in _trees().items():
        for name, call in _calls(tree):
            if name.endswith("torch.load") or (name == "load" and isinstance(call.func, ast.Name)):
                found.append(_where(path, call))
                assert _kw(call, "weights_only") is True, (
                    f"{_where(path, call)}: torch.load without weights_only=True"
                )
    assert found, "the scan should see the packaged-weights loader"


def test_no_pickle_like_loader_outside_the_restricted_unpickler():
    for path, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    if name.split(".")[0] in UNSAFE_MODULES:
                        assert path == EMBEDDED and name == "pickle", f"{_where(path, node)} imports {name}"
        for name, call in _calls(tree):
            assert name not in ("eval", "exec", "compile", "__import__", "os.system", "os.popen"), (
                f"{_where(path, call)} calls {name}"
            )
            assert name not in ("pickle.load", "pickle.loads"), f"{_where(path, call)}: unrestricted {name}"
            if name.endswith(("np.load", "numpy.load")):
                assert _kw(call, "allow_pickle") in ("<missing>", False), (
                    f"{_where(path, call)}: allow_pickle"
                )
            assert _kw(call, "shell") in ("<missing>", False), f"{_where(path, call)}: shell=True"


def test_the_embedded_unpickler_is_restricted():
    tree = ast.parse(EMBEDDED.read_text())
    unpicklers = [
        c for c in ast.walk(tree)
        if isinstance(c, ast.ClassDef) and any(_dotted(b) == "pickle.Unpickler" for b in c.bases)
    ]  # fmt: skip
    assert [c.name for c in unpicklers] == ["_NumpyOnlyUnpickler"]
    methods = {f.name for f in unpicklers[0].body if isinstance(f, ast.FunctionDef)}
    assert "find_class" in methods
    # the only unpickling calls are .load() on that class
    for name, call in _calls(tree):
        if name.endswith("Unpickler") and name != "_NumpyOnlyUnpickler":
            raise AssertionError(f"embedded.py:{call.lineno} uses {name}")
    from latentcc.data.embedded import _NumpyOnlyUnpickler

    for module, name in (("builtins", "eval"), ("os", "system"), ("numpy", "load"), ("subprocess", "Popen")):
        with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
            _NumpyOnlyUnpickler(io.BytesIO()).find_class(module, name)


def test_hugging_face_loads_never_trust_remote_code():
    calls = [(p, c) for p, t in _trees().items() for n, c in _calls(t) if n.endswith("from_pretrained")]
    assert calls
    for path, call in calls:
        assert _kw(call, "trust_remote_code") is False, f"{_where(path, call)}: pass trust_remote_code=False"
        assert _kw(call, "local_files_only") is True, f"{_where(path, call)}: pass local_files_only=True"


def test_config_and_metadata_files_are_read_with_json():
    readers = {
        "app/cliargs.py": "read_config_file",
        "app/probe_args.py": "load_groups",
        "train/checkpoint.py": "verify_checkpoint",
    }
    for rel, func in readers.items():
        tree = ast.parse((SRC / rel).read_text())
        fn = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == func)
        names = {n for n, _ in _calls(fn)}
        assert "json.loads" in names, f"{rel}:{func} should parse with json"


# ----------------------------------------------------------------------------- malicious files


class _Evil:
    """Unpickling this creates ``marker`` (it would run any code the same way)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_bytes(marker: Path, *, inside_array: bool = False) -> bytes:
    obj = np.array([_Evil(marker)], dtype=object) if inside_array else _Evil(marker)
    return pickle.dumps(obj, protocol=2)


@pytest.mark.parametrize("inside_array", [False, True], ids=["object", "object-array"])
def test_malicious_pickle_as_embedded_dataset_is_refused(tmp_path, monkeypatch, inside_array):
    marker = tmp_path / "pwned"
    evil = tmp_path / "animal_data_version_3.gz"
    evil.write_bytes(gzip.compress(_evil_bytes(marker, inside_array=inside_array)))
    monkeypatch.setattr("latentcc.data.embedded.asset_file", lambda *a: evil)  # where the data should be
    from latentcc.data import load_dataset

    with pytest.raises(
        LatentccError, match=r"refusing to unpickle [\w.]+: only numpy arrays.*Fix: reinstall"
    ):
        load_dataset("animal-mnist")
    assert not marker.exists()


def test_malicious_pickle_as_packaged_weights_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    evil = tmp_path / "handwriting_model.pth"
    torch.save({"weight": _Evil(marker)}, evil)  # a torch checkpoint carrying a code-running object
    monkeypatch.setattr("latentcc.models.image.asset_file", lambda *a: evil)
    from latentcc.models import load_model

    with pytest.raises(CheckpointError, match=r"not a plain state dict.*Nothing was executed"):
        load_model("mnist-cnn", 10)
    assert not marker.exists()


def test_malicious_pickle_as_checkpoint_is_refused(tmp_path, digits_splits):
    """A pickle (torch.save) where a checkpoint's weights should be, even with a matching MANIFEST."""
    from conftest import tiny_mlp
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    cfg = TrainConfig(epochs=1, progress=False, tensorboard=False, device="cpu")
    fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "run")
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "run" / "checkpoints" / "epoch-0001"
    for target in (ckpt / "model.safetensors", tmp_path / "run" / "best.safetensors"):
        torch.save({"0.weight": _Evil(marker)}, target)
    manifest = json.loads((ckpt / "MANIFEST.json").read_text())
    manifest["model.safetensors"] = hashlib.sha256((ckpt / "model.safetensors").read_bytes()).hexdigest()
    (ckpt / "MANIFEST.json").write_text(json.dumps(manifest))  # an attacker can forge the checksum too

    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file"):
        fit(tiny_mlp(), digits_splits, config=cfg, out_dir=tmp_path / "run", resume=True)
    from latentcc.train.checkpoint import load_weights

    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(
            tmp_path / "run" / "best.safetensors", tiny_mlp()
        )  # what `latentcc probe --checkpoint` reads
    assert not marker.exists()
