"""`latentcc reproduce lcc-paper` offline: a tiny fake of CIFAR-100 and of the hub ResNet in their formats.

The fake is built here with the datasets / transformers APIs (not with the module's own CI fake), so the
reproduction is checked against the hub formats: a DatasetDict (img, fine_label, coarse_label; train/test)
saved with save_to_disk, and a ResNet folder written by save_pretrained.
"""

import json
import shutil

import numpy as np
import pytest

from latentcc.app.cli import main
from latentcc.app.reproduce import NOT_IN_ALL, run_reproduction
from latentcc.app.reproduce.base import cell_folder
from latentcc.app.reproduce.lcc_paper import SIZES, run_paper
from latentcc.plumbing.errors import LatentccError

datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """(data folder, model folder): 3 classes of 32 x 32 RGB images, overlapping colours; a ResNet of width 8."""
    from PIL import Image

    root = tmp_path_factory.mktemp("cifar-fake")
    rng = np.random.default_rng(1)
    colour = np.array([[150, 110, 110], [110, 150, 110], [110, 110, 150]])
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "fine_label": datasets.ClassLabel(names=["apple", "bee", "cloud"]),
            "coarse_label": datasets.ClassLabel(names=["food", "nature"]),
        }
    )

    def split(n):
        fine = rng.integers(0, 3, n).tolist()
        # a per-image colour shift as large as the class contrast: classes overlap, so some samples misclustered
        shift = rng.normal(0, 40, (n, 1, 1, 3)) + rng.integers(-30, 31, (n, 32, 32, 3))
        px = np.clip(colour[fine][:, None, None] + shift, 0, 255).astype(np.uint8)
        return datasets.Dataset.from_dict(
            {
                "img": [Image.fromarray(p) for p in px],
                "fine_label": fine,
                "coarse_label": [f // 2 for f in fine],
            },
            features=features,
        )

    datasets.DatasetDict(train=split(60), test=split(30)).save_to_disk(str(root / "data"))
    cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=3)
    transformers.ResNetForImageClassification(cfg).save_pretrained(str(root / "model"))
    # the hub model's preprocessor file, at 32 px so that the test stays fast
    prep = {
        "size": {"shortest_edge": 32},
        "image_mean": [0.485, 0.456, 0.406],
        "image_std": [0.229, 0.224, 0.225],
    }
    (root / "model" / "preprocessor_config.json").write_text(json.dumps(prep))
    return str(root / "data"), str(root / "model")


def _run_dir(out, key, seed):
    """The run folder of grid cell ``key`` (or the baseline) for ``seed``, as its comparison names it."""
    cell = "w0.01_k5" if key == "baseline" else cell_folder(key)
    sides = json.loads((out / cell / "compare.json").read_text())["sides"]
    return out / "runs" / sides["a" if key == "baseline" else "b"]["folder"] / f"seed-{seed}"


def _test_top1(out, key, seeds):
    return [json.loads((_run_dir(out, key, s) / "results.json").read_text())["test_top1"] for s in seeds]


def test_report_holds_the_paired_differences_of_its_runs(fake, tmp_path):
    data, model = fake
    out, seeds = tmp_path / "o", (0, 1, 2)
    r = run_reproduction("lcc-paper", size="ci", seeds=seeds, out_dir=out, data=data, model=model)
    saved = json.loads((out / "result.json").read_text())
    base = _test_top1(out, "baseline", seeds)
    assert saved["numbers"]["baseline"]["acc"] == pytest.approx(base)
    for w, k in SIZES["ci"]["grid"]:
        key = f"w={w:g}, k={k}"
        diffs = np.subtract(_test_top1(out, key, seeds), base)
        cell = saved["numbers"][key]
        assert cell["diffs"] == pytest.approx(diffs.tolist(), abs=1e-12)
        # mean and 95 % t half-width of the 3 paired differences (t_0.975, 2 dof = 4.3027)
        assert cell["diff"] == pytest.approx(diffs.mean(), abs=1e-12)
        assert cell["half"] == pytest.approx(4.302653 * diffs.std(ddof=1) / np.sqrt(3), abs=1e-5)
        run = _run_dir(out, key, 0)
        lcc = json.loads((run / "config.json").read_text())["lcc"]
        assert (lcc["weight"], lcc["k"], lcc["layers"]) == (w, k, ["resnet.pooler"])
        history = json.loads((run / "metrics.json").read_text())
        assert (
            history[0]["train_lcc"] == 0 and history[1]["train_lcc"] > 0
        )  # warm-up, then a correction epoch
        assert history[1]["lcc/net.resnet.pooler/clusters"] >= 1
    assert (
        "lcc/net.resnet.pooler/clusters"
        not in json.loads((_run_dir(out, "baseline", 0) / "metrics.json").read_text())[1]
    )
    assert r.verdict == saved["verdict"] and r.seeds == seeds
    # 20 % of the 60 training images held out for validation, CIFAR's own test split kept whole
    assert "48 train / 12 val / 30 test, 3 classes" in r.setting

    # interrupted: one run lost its results (its checkpoint kept), another never started; the same
    # command again resumes the first, trains the second and reuses the other 7
    (_run_dir(out, "baseline", 2) / "results.json").unlink()
    gone = _run_dir(out, "w=0.01, k=5", 1)
    shutil.rmtree(gone)
    again = run_reproduction("lcc-paper", size="ci", seeds=seeds, out_dir=out, data=data, model=model)
    assert again.numbers == r.numbers  # the same numbers: a resumed run continues bit for bit
    first, second = (
        json.loads((out / c / "compare.json").read_text())["runs"] for c in ("w0.0001_k5", "w0.01_k5")
    )
    assert first["resumed"] == ["baseline/seed-2"] and first["trained"] == [] and len(first["reused"]) == 5
    assert (
        second["trained"] == ["w=0.01, k=5/seed-1"] and second["resumed"] == [] and len(second["reused"]) == 5
    )
    with pytest.raises(LatentccError, match="'out_dir' parameter of run_reproduction must be a new or empty"):
        run_reproduction("lcc-paper", size="default", seeds=seeds, out_dir=out, data=data, model=model)


def test_hub_ids_take_the_same_path_as_the_folders(fake, tmp_path, monkeypatch):
    """The hub ids become local folders (download patched to the fake) and train exactly as the folders do."""
    import huggingface_hub

    data, model = fake
    calls = []

    def load_dataset(name, cache_dir=None):
        calls.append(("dataset", name))
        return datasets.load_from_disk(data)

    def snapshot_download(repo_id, allow_patterns=None, cache_dir=None):
        calls.append(("model", repo_id))
        assert "*.safetensors" in allow_patterns and "*.json" in allow_patterns
        return model

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    kw = {"seeds": (0,), "grid": ((1e-2, 5),), "train": SIZES["ci"]["train"]}
    hub = run_paper(out=tmp_path / "hub", cache=tmp_path / "cache", **kw)
    assert calls == [("dataset", "uoft-cs/cifar100"), ("model", "microsoft/resnet-18")]
    assert (tmp_path / "cache" / "latentcc-saved" / "uoft-cs--cifar100" / "dataset_dict.json").is_file()
    local = run_paper(data=data, model=model, out=tmp_path / "local", **kw)
    assert hub.numbers["baseline"]["acc"] == local.numbers["baseline"]["acc"]
    assert hub.numbers["w=0.01, k=5"]["acc"] == local.numbers["w=0.01, k=5"]["acc"]
    assert hub.setting.startswith("microsoft/resnet-18 fine-tuned on uoft-cs/cifar100")
    run_paper(out=tmp_path / "hub2", cache=tmp_path / "cache", **kw)  # the saved dataset is reused
    assert [c for c in calls if c[0] == "dataset"] == [("dataset", "uoft-cs/cifar100")]


def test_cli_and_refusals(fake, tmp_path, capsys):
    data, model = fake
    argv = ["reproduce", "lcc-paper", "--size", "ci", "--seeds", "0", "--data", data, "--model", model]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    assert "lcc-paper:" in capsys.readouterr().out
    assert (tmp_path / "o" / "w0.01_k5" / "compare.json").is_file()
    assert "lcc-paper" in NOT_IN_ALL  # `reproduce all` never downloads
    with pytest.raises(LatentccError, match=r"'data'.*No folder \./no-such"):
        run_paper(data="./no-such", model=model, out=tmp_path / "x", seeds=(0,))
    with pytest.raises(LatentccError, match=r"'model'.*drop --model"):
        run_reproduction("lcc-gain", size="ci", out_dir=tmp_path / "y", model=model)
