"""latentcc.data: embedded real datasets, splits, adapters, registry and their errors."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from latentcc.data import (
    DATASETS,
    DatasetSplits,
    IndexedDataset,
    animal_mnist,
    digits,
    fashion_mnist,
    from_arrays,
    from_hf,
    from_hf_disk,
    image_folder,
    list_datasets,
    load_dataset,
    make_splits,
    mnist5k,
    rotten_tomatoes,
)
from latentcc.data.embedded import _load_numpy_pickle
from latentcc.errors import LatentccError, MissingExtraError

SPLITS = ("train", "val", "test")


def all_source(s: DatasetSplits) -> np.ndarray:
    return np.concatenate([getattr(s, k).source_index for k in SPLITS])


def all_targets(s: DatasetSplits) -> np.ndarray:
    return np.concatenate([getattr(s, k).targets for k in SPLITS])


def assert_stratified(s: DatasetSplits, val_fraction: float = 0.1, test_fraction: float = 0.2) -> None:
    n_c = np.bincount(all_targets(s), minlength=s.num_classes)
    for split, frac in (("val", val_fraction), ("test", test_fraction)):
        counts = getattr(s, split).class_counts()
        assert np.all(np.abs(counts - n_c * frac) < 1), (split, counts, n_c * frac)


# ----------------------------------------------------------------------------- embedded datasets


@pytest.fixture(scope="module")
def animals() -> DatasetSplits:
    return animal_mnist()


def test_animal_mnist_shapes_classes_and_pixels(animals: DatasetSplits) -> None:
    s = animals
    assert s.name == "animal-mnist" and s.kind == "image"
    assert s.classes == [
        "bear",
        "bird",
        "cat",
        "cow",
        "dog",
        "elephant",
        "giraffe",
        "horse",
        "sheep",
        "zebra",
    ]
    assert s.input_shape == (1, 28, 28) and s.num_classes == 10
    assert [len(s.train), len(s.val), len(s.test)] == [7000, 1000, 2000]
    assert np.bincount(all_targets(s)).tolist() == [1000] * 10
    assert s.test.class_counts().tolist() == [200] * 10 and s.val.class_counts().tolist() == [100] * 10
    x, y, idx = s.train[0]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28) and isinstance(y, int) and idx == 0
    xs = torch.stack([s.test[i][0] for i in range(200)])
    assert float(xs.min()) == 0.0 and float(xs.max()) == 1.0
    # MNIST-like: black background (the border is almost all zero), bright silhouette
    assert float(xs[..., 0, :].mean()) < 0.05 and float(xs.mean()) > 0.15


def test_mnist5k_sizes_and_shuffled_split() -> None:
    s = mnist5k()
    assert s.classes == [str(i) for i in range(10)] and s.input_shape == (1, 28, 28)
    assert len(s.train) + len(s.val) + len(s.test) == 5000
    assert np.bincount(all_targets(s)).tolist() == [500] * 10
    assert s.test.class_counts().tolist() == [100] * 10
    t = s.train.targets
    assert (
        np.any(np.diff(t) < 0) and len(np.unique(t[:50])) >= 8
    )  # the csv is sorted by label; the split is not
    x = s.train[0][0]
    assert x.shape == (1, 28, 28) and 0.0 <= float(x.min()) and float(x.max()) == 1.0


def test_digits_sizes_and_uneven_stratification() -> None:
    s = digits()
    assert len(s.train) + len(s.val) + len(s.test) == 1797 and s.input_shape == (1, 8, 8)
    assert np.bincount(all_targets(s)).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert_stratified(s)
    assert len(s.test) == 359 and len(s.val) == 180  # round(1797 * 0.2), round(1797 * 0.1)
    x = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_rotten_tomatoes_text() -> None:
    s = rotten_tomatoes()
    assert s.kind == "text" and s.classes == ["rotten", "fresh"] and s.input_shape is None
    assert np.bincount(all_targets(s)).tolist() == [5405, 7403]  # 1,097 'plot' rows dropped
    x, y, idx = s.train[0]
    assert isinstance(x, str) and len(x) > 0 and y in (0, 1) and idx == 0
    small = rotten_tomatoes(max_samples=200)
    assert len(small.train) + len(small.val) + len(small.test) == 200
    assert np.bincount(all_targets(small)).tolist() == [84, 116]  # 200 * 5405/12808 = 84.4
    batch = next(iter(DataLoader(small.train, batch_size=4)))
    assert isinstance(batch[0], list | tuple) and all(isinstance(t, str) for t in batch[0])


# ----------------------------------------------------------------------------- split properties


def test_splits_deterministic_disjoint_covering(animals: DatasetSplits) -> None:
    again = animal_mnist(seed=0)
    other = animal_mnist(seed=1)
    for k in SPLITS:
        assert np.array_equal(getattr(animals, k).source_index, getattr(again, k).source_index)
    assert not np.array_equal(animals.test.source_index, other.test.source_index)
    src = all_source(animals)
    assert np.array_equal(np.sort(src), np.arange(10_000))  # disjoint and covering
    assert_stratified(animals)
    assert_stratified(other)


def test_max_samples_is_stratified_and_deterministic() -> None:
    s = animal_mnist(max_samples=500, seed=3)
    assert len(s.train) + len(s.val) + len(s.test) == 500
    assert np.bincount(all_targets(s)).tolist() == [50] * 10
    assert [len(s.train), len(s.val), len(s.test)] == [350, 50, 100]
    assert len(np.unique(all_source(s))) == 500 and all_source(s).max() < 10_000
    assert np.array_equal(s.train.source_index, animal_mnist(max_samples=500, seed=3).train.source_index)
    assert not np.array_equal(s.train.source_index, animal_mnist(max_samples=500, seed=4).train.source_index)


def test_idx_and_shuffled_dataloader(animals: DatasetSplits) -> None:
    ds = animals.val
    assert [ds[i][2] for i in range(len(ds))] == list(range(len(ds)))
    seen = []
    for x, y, idx in DataLoader(ds, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0)):
        assert x.shape[1:] == (1, 28, 28) and y.dtype == torch.long and idx.dtype == torch.long
        assert torch.equal(torch.from_numpy(ds.targets)[idx], y)
        seen.append(idx)
    order = torch.cat(seen)
    assert sorted(order.tolist()) == list(range(len(ds))) and order.tolist() != list(range(len(ds)))
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_subset_reindexes_and_keeps_source(animals: DatasetSplits) -> None:
    sub = animals.train.subset([5, 2, 9])
    assert len(sub) == 3 and [sub[i][2] for i in range(3)] == [0, 1, 2]
    assert sub.source_index.tolist() == animals.train.source_index[[5, 2, 9]].tolist()
    assert sub.targets.tolist() == animals.train.targets[[5, 2, 9]].tolist()
    assert torch.equal(sub[1][0], animals.train[2][0])
    mask = animals.val.targets == 3
    assert np.all(animals.val.subset(mask).targets == 3) and len(animals.val.subset(mask)) == 100
    with pytest.raises(LatentccError, match="'indices'"):
        animals.train.subset([7000])


def test_summary(animals: DatasetSplits) -> None:
    summ = animals.summary()
    assert summ["sizes"] == {"train": 7000, "val": 1000, "test": 2000}
    assert summ["class_counts"]["train"] == [700] * 10 and summ["input_shape"] == [1, 28, 28]
    assert summ["num_classes"] == 10 and summ["classes"][0] == "bear"


# ----------------------------------------------------------------------------- make_splits validation


def test_make_splits_bad_labels_and_classes() -> None:
    x = np.zeros((20, 4, 4), dtype=np.uint8)
    y = np.array([0, 1] * 9 + [2, 7])
    with pytest.raises(LatentccError, match=r"'y' parameter.*\[2, 7\].*Fix"):
        make_splits(x, y, ["a", "b"], name="t", kind="image")
    with pytest.raises(LatentccError, match="at least 2 class"):
        make_splits(x, np.zeros(20, dtype=int), ["only"], name="t", kind="image")
    with pytest.raises(LatentccError, match=r"'y' parameter.*20 labels"):
        make_splits(x, np.zeros(19, dtype=int), ["a", "b"], name="t", kind="image")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"val_fraction": 1.0}, "'val_fraction'"),
        ({"test_fraction": -0.1}, "'test_fraction'"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "val_fraction \\+ test_fraction < 1"),
        ({"max_samples": 0}, "'max_samples'"),
        ({"seed": -1}, "'seed'"),
    ],
)
def test_make_splits_bad_fractions(kw: dict, match: str) -> None:
    x = np.zeros((20, 4, 4), dtype=np.uint8)
    with pytest.raises(LatentccError, match=match):
        make_splits(x, np.arange(20) % 2, ["a", "b"], name="t", kind="image", **kw)


def test_make_splits_bad_pixels_and_tiny_data() -> None:
    x = np.random.default_rng(0).random((20, 4, 4)).astype(np.float32)
    x[3, 1, 1] = np.nan
    with pytest.raises(LatentccError, match=r"'x' parameter.*finite.*samples \[3\]"):
        make_splits(x, np.arange(20) % 2, ["a", "b"], name="t", kind="image")
    with pytest.raises(LatentccError, match=r"\[0, 1\].*values from 0 to 255"):
        make_splits(
            np.linspace(0, 255, 320).reshape(20, 4, 4), np.arange(20) % 2, ["a", "b"], name="t", kind="image"
        )
    with pytest.raises(LatentccError, match="train split is empty"):
        make_splits(np.zeros((2, 4, 4)), [0, 1], ["a", "b"], name="t", kind="image")
    # the smallest workable case: one sample per split
    s = make_splits(np.zeros((3, 4, 4)), [0, 1, 1], ["a", "b"], name="t", kind="image")
    assert [len(s.train), len(s.val), len(s.test)] == [1, 1, 1]
    # a zero fraction is an explicitly empty split
    s = make_splits(
        np.zeros((10, 4, 4)), np.arange(10) % 2, ["a", "b"], name="t", kind="image", val_fraction=0.0
    )
    assert [len(s.train), len(s.val), len(s.test)] == [8, 0, 2]


# ----------------------------------------------------------------------------- adapters


def test_from_arrays_kinds() -> None:
    rng = np.random.default_rng(0)
    tab = from_arrays(rng.normal(size=(50, 7)), np.arange(50) % 5)
    assert tab.kind == "tabular" and tab.input_shape == (7,) and tab.classes == ["0", "1", "2", "3", "4"]
    assert tab.train[0][0].shape == (7,) and tab.train[0][0].dtype == torch.float32
    img = from_arrays(torch.rand(30, 3, 5, 6), torch.arange(30) % 3, classes=["r", "g", "b"])
    assert img.kind == "image" and img.input_shape == (3, 5, 6)
    gray = from_arrays(rng.integers(0, 256, size=(30, 5, 6)), np.arange(30) % 2)
    assert gray.input_shape == (1, 5, 6) and float(gray.train[0][0].max()) <= 1.0
    txt = from_arrays(["good", "bad", "fine", "awful"] * 5, ["pos", "neg", "pos", "neg"] * 5)
    assert txt.kind == "text" and txt.classes == ["neg", "pos"]
    for x, y, _ in txt.train:
        assert y == (0 if x in ("bad", "awful") else 1)
    with pytest.raises(LatentccError, match=r"channels-last.*permute"):
        from_arrays(np.zeros((30, 8, 8, 3), dtype=np.uint8), np.arange(30) % 2)


def write_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> None:
    from PIL import Image

    Image.new("RGB", size, rgb).save(path)


def make_image_tree(root: Path, per_class: int = 5) -> Path:
    for name, rgb in (("cats", (255, 0, 0)), ("dogs", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_png(root / name / f"{i}.png", rgb, size=(6, 4) if i else (12, 8))
    return root


def test_image_folder(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "pets")
    s = image_folder(root)
    assert s.classes == ["cats", "dogs"] and s.name == "pets"
    assert s.input_shape == (3, 8, 12)  # the first image's size (width 12, height 8)
    assert len(s.train) + len(s.val) + len(s.test) == 10
    for x, y, _ in [s.train[i] for i in range(len(s.train))]:
        expected = torch.tensor([1.0, 0.0, 0.0]) if y == 0 else torch.tensor([0.0, 0.0, 1.0])
        assert torch.allclose(x.mean(dim=(1, 2)), expected, atol=1e-6)
    g = image_folder(root, size=(5, 7), grayscale=True)
    assert g.input_shape == (1, 5, 7)
    via_registry = load_dataset(root, size=4)
    assert via_registry.input_shape == (3, 4, 4)


def test_image_folder_errors(tmp_path: Path) -> None:
    root = make_image_tree(tmp_path / "pets")
    bad = root / "dogs" / "x.png"
    bad.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(LatentccError, match=r"x\.png.*remove"):
        image_folder(root)
    bad.unlink()
    (root / "birds").mkdir()
    with pytest.raises(LatentccError, match="birds has no images"):
        image_folder(root)
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    write_png(one / "cats" / "a.png", (0, 0, 0))
    with pytest.raises(LatentccError, match="at least 2 class sub-folders"):
        image_folder(one)
    with pytest.raises(LatentccError, match="'root'"):
        image_folder(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- Fashion-MNIST (IDX)


def write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def make_fashion_root(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


def test_fashion_mnist_from_idx(tmp_path: Path) -> None:
    root = make_fashion_root(tmp_path / "fm")
    s = fashion_mnist(root)
    assert s.classes[0] == "T-shirt/top" and s.classes[9] == "Ankle boot" and s.input_shape == (1, 28, 28)
    assert [len(s.train), len(s.val), len(s.test)] == [54, 6, 20]  # its own test set; val = 10% of train
    assert sorted(s.test.source_index.tolist()) == list(range(60, 80))  # test rows numbered after train
    assert np.array_equal(np.sort(np.concatenate([s.train.source_index, s.val.source_index])), np.arange(60))
    assert s.test.class_counts().tolist() == [2] * 10
    assert s.val.class_counts().sum() == 6 and s.val.class_counts().max() == 1  # quotas of 0.6 per class
    small = load_dataset("fashion-mnist", root=root, max_samples=40)
    assert [len(small.train) + len(small.val), len(small.test)] == [30, 10]  # 60:20 kept in proportion


def test_fashion_mnist_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(MissingExtraError, match=r"apt-get install dataset-fashion-mnist.*root="):
        fashion_mnist(tmp_path / "absent")
    root = make_fashion_root(tmp_path / "fm")
    path = root / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])  # valid gzip, truncated IDX payload
    with pytest.raises(LatentccError, match="truncated or corrupt"):
        fashion_mnist(root)
    path.write_bytes(gzip.compress(raw)[:-50])  # truncated gzip stream
    with pytest.raises(LatentccError, match="Could not read the IDX file"):
        fashion_mnist(root)
    with gzip.open(path, "wb") as f:
        f.write(b"\x12\x34" + raw[2:])
    with pytest.raises(LatentccError, match="not an IDX file"):
        fashion_mnist(root)


# ----------------------------------------------------------------------------- Hugging Face datasets


def test_hf_round_trip_text_and_images(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    texts = [f"review {i}" for i in range(40)]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(40)]}, features=feats)
    ds.save_to_disk(str(tmp_path / "reviews"))
    s = load_dataset(tmp_path / "reviews")
    assert s.kind == "text" and s.classes == ["neg", "pos"] and s.name == "reviews"
    assert [len(s.train), len(s.val), len(s.test)] == [28, 4, 8]
    for x, y, _ in s.test:
        assert x in texts and y == int(x.split()[1]) % 2

    rng = np.random.default_rng(0)
    img = {
        "image": list(rng.integers(0, 256, size=(30, 6, 6), dtype=np.uint8)),
        "label": [i % 3 for i in range(30)],
    }
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(img), "test": datasets.Dataset.from_dict(img).select(range(9))}
    )
    dd.save_to_disk(str(tmp_path / "pix"))
    s = from_hf_disk(tmp_path / "pix")
    assert s.kind == "image" and s.input_shape == (1, 6, 6) and s.classes == ["0", "1", "2"]
    assert [len(s.train), len(s.val), len(s.test)] == [27, 3, 9]
    first = s.test.source_index.argmin()  # source row 30 = row 0 of the test split
    assert s.test.source_index[first] == 30
    assert torch.allclose(s.test[int(first)][0][0], torch.from_numpy(img["image"][0]).float() / 255)

    from PIL import Image

    pil = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in img["image"]], "label": img["label"]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}
        ),
    )
    s = from_hf(pil, grayscale=True, name="pil")
    assert s.input_shape == (1, 6, 6) and s.kind == "image" and s.classes == ["a", "b", "c"]
    row = int(s.train.source_index[0])
    assert torch.allclose(s.train[0][0][0], torch.from_numpy(img["image"][row]).float() / 255)
    assert from_hf(pil, size=4).input_shape == (3, 4, 4)
    with pytest.raises(LatentccError, match=r"'label_column'.*'image', 'label'"):
        from_hf(pil, label_column="target")


# ----------------------------------------------------------------------------- registry and safety


def test_registry_and_unknown_name() -> None:
    assert list_datasets() == ["animal-mnist", "mnist5k", "digits", "rotten-tomatoes", "fashion-mnist"]
    assert set(DATASETS) == set(list_datasets())
    with pytest.raises(LatentccError, match=r"animal-mnist.*rotten-tomatoes.*Did you mean 'animal-mnist'"):
        load_dataset("animal-mnst")
    with pytest.raises(LatentccError, match=r"known dataset name \['animal-mnist'"):
        load_dataset("cifar10")
    s = load_dataset("digits", max_samples=100, seed=1)
    assert isinstance(s.train, IndexedDataset) and len(s.train) + len(s.val) + len(s.test) == 100


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("this pickle ran code",))


def test_numpy_only_unpickler(tmp_path: Path) -> None:
    good = tmp_path / "good.gz"
    with gzip.open(good, "wb") as f:
        pickle.dump(np.arange(6, dtype=np.int64).reshape(2, 3), f)
    assert _load_numpy_pickle(good).tolist() == [[0, 1, 2], [3, 4, 5]]
    evil = tmp_path / "evil.gz"
    with gzip.open(evil, "wb") as f:
        pickle.dump(_Evil(), f)
    with pytest.raises(LatentccError, match=r"refusing to unpickle builtins.print"):
        _load_numpy_pickle(evil)


def test_relabel_and_stratified_indices(digits_splits: DatasetSplits) -> None:
    from latentcc.data.base import stratified_indices
    from latentcc.errors import LatentccError

    cmap = np.arange(10) % 2  # even / odd digits
    sup = digits_splits.relabel(cmap, ["even", "odd"], name="digits-parity")
    assert sup.classes == ["even", "odd"] and sup.num_classes == 2
    for split in ("train", "val", "test"):
        a, b = getattr(digits_splits, split), getattr(sup, split)
        assert np.array_equal(b.targets, a.targets % 2) and len(a) == len(b)
        x_a, y_a, i_a = a[3]
        x_b, y_b, i_b = b[3]
        assert torch.equal(x_a, x_b) and y_b == y_a % 2 and i_a == i_b == 3  # same sample, new label
    with pytest.raises(LatentccError, match="'class_map'"):
        digits_splits.train.relabel([0, 1], ["a", "b"])
    y = digits_splits.train.targets
    pick = stratified_indices(y, 100, seed=0)
    assert len(pick) == 100 and np.all(np.diff(pick) > 0)
    counts = np.bincount(y[pick], minlength=10)
    assert counts.min() >= 9 and counts.max() <= 11  # ~10 per class
    assert np.array_equal(pick, stratified_indices(y, 100, seed=0))
    assert len(stratified_indices(y, 10**6, seed=0)) == len(y)
