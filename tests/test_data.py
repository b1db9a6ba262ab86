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
from latentcc.plumbing.errors import LatentccError, MissingExtraError

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
    from latentcc.plumbing.errors import LatentccError

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


# ----------------------------------------------------------------------------- every image mode and bit depth

_U16 = np.array([[0, 32768], [65535, 255]], dtype=np.uint16)
_U16_READ = [0.0, 32768 / 65535, 1.0, 255 / 65535]  # 0.5000076 for 32768


def _read_folder(root: Path, images: dict[str, object], **kw: object) -> dict[str, torch.Tensor]:
    """Write ``images`` (file name -> PIL image) into classes a and b of an image folder; the pixels of
    class a's copy of each, by file name, as image_folder reads them."""
    for c in "ab":
        (root / c).mkdir(parents=True)
        for name, img in images.items():
            img.save(root / c / name)  # type: ignore[attr-defined]
    s = image_folder(root, val_fraction=0.0, test_fraction=0.0, **kw)
    names = sorted(images)
    return {names[int(src)]: s.train[i][0] for i, src in enumerate(s.train.source_index) if src < len(names)}


def test_image_folder_scales_every_mode_by_its_range(tmp_path: Path) -> None:
    from PIL import Image

    pgm16 = tmp_path / "src.pgm"  # PNM with maxval 65535: Pillow reads it as mode "I"
    pgm16.write_bytes(b"P5 2 2 65535\n" + _U16.astype(">u2").tobytes())
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 90, 90, 90, 180, 180, 180, 250, 250, 250])
    palette.putdata([0, 1, 2, 3])
    images = {
        "i16.png": Image.fromarray(_U16),  # I;16
        "i16.tif": Image.fromarray(_U16),
        "i16b.tif": Image.frombytes("I;16B", (2, 2), _U16.astype(">u2").tobytes()),
        "i32.pgm": Image.open(pgm16),
        "f.tif": Image.fromarray(np.array([[0.0, 0.25], [1.0, 0.75]], np.float32)),
        "l.png": Image.fromarray(np.array([[0, 51], [255, 128]], np.uint8)),
        "one.png": Image.fromarray(np.array([[False, True], [True, False]])),
        "p.png": palette,
    }
    assert [images[n].mode for n in ("i16.png", "i16b.tif", "i32.pgm", "f.tif", "one.png")] == [
        "I;16", "I;16B", "I", "F", "1",
    ]  # fmt: skip
    got = _read_folder(tmp_path / "gray", images, grayscale=True)
    for name in ("i16.png", "i16.tif", "i16b.tif", "i32.pgm"):
        assert got[name].shape == (1, 2, 2) and got[name].dtype == torch.float32
        assert np.allclose(got[name].flatten().numpy(), _U16_READ, rtol=0, atol=1e-7), name
    assert got["i16.png"].flatten()[1].item() == pytest.approx(0.5000076, abs=1e-7)  # not 1.0 (Pillow clips)
    assert got["f.tif"].flatten().tolist() == [0.0, 0.25, 1.0, 0.75]
    assert np.allclose(got["l.png"].flatten().numpy(), [0, 0.2, 1, 128 / 255], atol=1e-7)
    assert got["one.png"].flatten().tolist() == [0.0, 1.0, 1.0, 0.0]
    assert np.allclose(got["p.png"].flatten().numpy(), [0, 90 / 255, 180 / 255, 250 / 255], atol=1e-7)


def test_image_folder_colour_modes_and_transparency(tmp_path: Path) -> None:
    from PIL import Image

    la = Image.fromarray(np.array([[[0, 0], [0, 255]], [[200, 255], [100, 128]]], np.uint8), mode="LA")
    palette = Image.new("P", (2, 2))
    palette.putpalette([0, 0, 0, 90, 90, 90, 180, 180, 180, 250, 250, 250])
    palette.putdata([0, 1, 2, 3])
    palette.info["transparency"] = 0  # saved as the PNG's tRNS chunk
    rgba = Image.fromarray(np.array([[[255, 0, 0, 0], [255, 0, 0, 255]]], np.uint8), mode="RGBA")
    images = {
        "la.png": la,
        "p.png": palette,
        "rgba.png": rgba.resize((2, 2), Image.Resampling.NEAREST),
        "cmyk.tif": Image.new("CMYK", (2, 2), (255, 0, 0, 0)),  # cyan
        "rgb.tif": Image.new("RGB", (2, 2), (10, 20, 30)),
    }
    gray = _read_folder(tmp_path / "gray", images, grayscale=True)
    # transparent pixels show white, opaque ones their colour, half-transparent ones a blend
    assert gray["la.png"].flatten()[:3].tolist() == pytest.approx([1.0, 0.0, 200 / 255], abs=1e-7)
    assert 0.69 < gray["la.png"].flatten()[3].item() < 0.70  # 100 at alpha 128/255 over white: ~177/255
    assert gray["p.png"].flatten().tolist() == pytest.approx([1.0, 90 / 255, 180 / 255, 250 / 255], abs=1e-7)
    rgb = _read_folder(tmp_path / "rgb", images)
    assert rgb["rgba.png"][:, 0, 0].tolist() == [1.0, 1.0, 1.0] and rgb["rgba.png"][:, 0, 1].tolist() == [
        1,
        0,
        0,
    ]
    assert rgb["cmyk.tif"][:, 0, 0].tolist() == [0.0, 1.0, 1.0]
    assert rgb["rgb.tif"][:, 0, 0].tolist() == pytest.approx([10 / 255, 20 / 255, 30 / 255], abs=1e-7)
    assert rgb["la.png"].shape == (3, 2, 2)  # gray repeated to RGB


def test_image_folder_mixed_depths_share_one_scale_and_resize(tmp_path: Path) -> None:
    from PIL import Image

    eight = Image.fromarray(np.full((4, 4), 128, np.uint8))
    sixteen = Image.fromarray(np.full((4, 4), 32768, np.uint16))
    # file order a/1, a/2, b/1, b/2: the block turns float at a/2, then b/2 (8-bit) joins the float block
    for c, names in (("a", ("1_8.png", "2_16.png")), ("b", ("1_16.png", "2_8.png"))):
        (tmp_path / "mix" / c).mkdir(parents=True)
        for name in names:
            (eight if "_8" in name else sixteen).save(tmp_path / "mix" / c / name)
    s = image_folder(tmp_path / "mix", grayscale=True, size=3, val_fraction=0.0, test_fraction=0.0)
    assert s.input_shape == (1, 3, 3)
    by_row = {int(src): s.train[i][0] for i, src in enumerate(s.train.source_index)}
    for row, expected in ((0, 128 / 255), (1, 32768 / 65535), (2, 32768 / 65535), (3, 128 / 255)):
        assert by_row[row].dtype == torch.float32
        assert torch.allclose(by_row[row], torch.full((1, 3, 3), expected), atol=1e-6), (
            row
        )  # resized: constant
    (tmp_path / "mix" / "a" / "2_16.png").unlink()
    (tmp_path / "mix" / "b" / "1_16.png").unlink()
    eight_only = image_folder(tmp_path / "mix", val_fraction=0.0, test_fraction=0.0)
    assert eight_only.train._data.dtype == torch.uint8  # all 8-bit: the compact block, as before


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (
            np.array([[5.0, 1000.0]], np.float32),
            r"x\.tif has mode 'F' \(32-bit float\) with values from 5 to 1000",
        ),
        (np.array([[0.0, -0.5]], np.float32), r"values from -0\.5 to 0; float pixels must lie in \[0, 1\]"),
        (np.array([[0.0, np.inf]], np.float32), r"x\.tif has mode 'F' .*non-finite values.*Fix: rescale"),
        (
            np.array([[-5, 7]], np.int32),
            r"x\.tif is a TIFF of 32-bit signed integers .*Fix: save it as 8-bit",
        ),
    ],
)
def test_image_folder_refuses_pixels_without_a_known_range(
    tmp_path: Path, array: np.ndarray, match: str
) -> None:
    from PIL import Image

    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        Image.fromarray(array).save(tmp_path / "imgs" / c / "x.tif")
    with pytest.raises(LatentccError, match=match):
        image_folder(tmp_path / "imgs")


def test_hf_image_feature_of_16bit_images(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(_U16)] * 6, "label": [0, 1] * 3},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    s = from_hf(ds, grayscale=True, val_fraction=0.0, test_fraction=0.0)
    assert np.allclose(s.train[0][0].flatten().numpy(), _U16_READ, atol=1e-7)


# ----------------------------------------------------------------------------- column names, keyword typos


def test_hf_saved_dataset_with_other_column_names(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    texts = [f"{w} film {i}" for i, w in enumerate(["good", "bad"] * 10)]
    ds = datasets.Dataset.from_dict(
        {
            "T": texts,
            "note": ["x"] * 20,
            "L": [i % 2 for i in range(20)],
            "pix": [[float(i % 2)] * 4 for i in range(20)],
        }
    )
    ds.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(LatentccError, match=r"'label_column'.*\['T', 'note', 'L', 'pix'\].*--label-column"):
        load_dataset(tmp_path / "saved")
    with pytest.raises(LatentccError, match=r"cannot tell which column.*Fix: pass input_column="):
        load_dataset(tmp_path / "saved", label_column="L")
    s = load_dataset(tmp_path / "saved", label_column="L", input_column="T")
    assert s.kind == "text" and s.classes == ["0", "1"]
    for x, y, _ in s.train:
        assert texts.index(x) % 2 == y  # each text keeps its own label
    tab = load_dataset(tmp_path / "saved", label_column="L", input_column="pix")  # an array column: tabular
    assert tab.kind == "tabular" and tab.input_shape == (4,)
    assert all(float(x[0]) == y for x, y, _ in tab.train)
    with pytest.raises(
        LatentccError, match=r"'input_column' parameter of from_hf must be a column other than"
    ):
        load_dataset(tmp_path / "saved", label_column="L", input_column="L")
    with pytest.raises(LatentccError, match=r"'input_column'.*one of the dataset's columns.*--input-column"):
        load_dataset(tmp_path / "saved", label_column="L", input_column="text")
    with pytest.raises(LatentccError, match=r"not \['input_column', 'text_column'\]"):
        from_hf(ds, label_column="L", input_column="T", text_column="T")


def test_unknown_keywords_name_the_function_called() -> None:
    x, y = np.random.default_rng(0).random((20, 8, 8)), np.arange(20) % 2
    with pytest.raises(
        LatentccError, match=r"from_arrays got the unknown .*\['seeds'\].*Did you mean 'seed'"
    ):
        from_arrays(x, y, seeds=1)
    with pytest.raises(LatentccError, match=r"'seed' parameter of from_arrays must be an int >= 0"):
        from_arrays(x, y, seed=-1)  # not "of make_splits": the user never called it
    with pytest.raises(
        LatentccError, match=r"'val_fraction' parameter of digits must be a float in \[0, 1\)"
    ):
        load_dataset("digits", val_fraction=2)
    with pytest.raises(
        LatentccError, match=r"load_dataset\('digits'\) \(an embedded dataset\) got .*\['size'\]"
    ):
        load_dataset("digits", size=4)
    with pytest.raises(LatentccError, match=r"'input_column' parameter of load_dataset must be left unset"):
        load_dataset("digits", input_column="x")
    assert load_dataset("digits", label_column="label", max_samples=50).num_classes == 10  # the default: fine


# ----------------------------------------------------------------------------- a __len__ that promises too much


class _LenLies(torch.utils.data.Dataset):
    """``len()`` says ``n_len``; only ``n_real`` samples exist (list-backed: IndexError; dict-backed: KeyError)."""

    def __init__(self, n_real: int = 80, n_len: int = 100, backing: str = "list") -> None:
        rng = np.random.default_rng(0)
        rows = [(torch.from_numpy(rng.random(6).astype(np.float32)), i % 4, i) for i in range(n_real)]
        self.rows = rows if backing == "list" else dict(enumerate(rows))
        self.n_len = n_len

    def __len__(self) -> int:
        return self.n_len

    def __getitem__(self, i: int) -> tuple:
        return self.rows[i]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))


def _tail(err: str = "IndexError") -> str:
    return rf" says it holds 100 .*raised {err}: .*It reads index 79 but not 80.*Fix: make __len__ return .*0\.\.99\."


@pytest.mark.parametrize("backing", ["list", "dict"])
def test_a_dataset_shorter_than_its_len_names_the_index(backing: str) -> None:
    from types import SimpleNamespace

    from latentcc.config import TrainConfig
    from latentcc.latents.collect import collect_latents
    from latentcc.train import fit
    from latentcc.train.loop import evaluate

    bad, good = _LenLies(backing=backing), _LenLies(20, 20)
    tail = _tail("KeyError" if backing == "dict" else "IndexError")
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, tensorboard=False, device="cpu")
    with pytest.raises(LatentccError, match=r"_LenLies \(the training split of fit\)" + tail):
        fit(_model(), SimpleNamespace(train=bad, val=good, test=good), config=cfg)
    with pytest.raises(LatentccError, match=r"_LenLies \(evaluated as 'val'\)" + tail):
        evaluate(_model(), bad, device="cpu", desc="val")
    with pytest.raises(LatentccError, match=r"_LenLies \(whose latents are collected\)" + tail):
        collect_latents(_model(), DataLoader(bad, batch_size=32), ["1"], progress=False)


def test_a_dataset_shorter_than_its_len_in_a_worker_process() -> None:
    from latentcc.train.loop import evaluate

    # the worker's IndexError is re-raised in this process with the worker's traceback as its message
    with pytest.raises(LatentccError, match=r"_LenLies \(evaluated as 'test'\)" + _tail()):
        evaluate(_model(), _LenLies(), device="cpu", desc="test", num_workers=1)


def test_read_batches_leaves_other_errors_alone() -> None:
    from latentcc.plumbing.batch import read_batches

    ds = _LenLies(20, 20)
    assert len(read_batches(DataLoader(ds, batch_size=8), "x")) == 3  # progress bars keep their total
    assert sum(len(b[1]) for b in read_batches(DataLoader(ds, batch_size=8), "x")) == 20
    # a sampler asking past the end: every index of the dataset reads, so the original error stands
    with pytest.raises(IndexError):
        list(read_batches(DataLoader(ds, batch_size=8, sampler=[0, 25]), "x"))
    gen = read_batches((b for b in [1, 2]), "x")  # no length: passed through as an iterator
    assert list(gen) == [1, 2]


def test_a_getitem_bug_at_index_0_is_not_called_a_length_mismatch() -> None:
    from latentcc.plumbing.batch import read_batches

    class Broken(torch.utils.data.Dataset):  # a transform wants a key the samples do not have
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> tuple:
            return {"pixels": torch.zeros(2)}["image"], 0, i

    with pytest.raises(LatentccError) as e:
        list(read_batches(DataLoader(Broken(), batch_size=4), "the training split of fit"))
    msg = str(e.value)
    assert "Broken (the training split of fit) fails to read even its first sample" in msg
    assert "raised KeyError: 'image'" in msg and "run dataset[0]" in msg
    assert "fewer samples" not in msg and "__len__ says" not in msg
    assert isinstance(e.value.__cause__, KeyError)  # the original error and its traceback stay attached
    # a prefix that reads is still a length mismatch, named at the first missing index
    lies = r"says it holds 5 samples .*It reads index 0 but not 1: it holds fewer"
    with pytest.raises(LatentccError, match=lies):
        list(read_batches(DataLoader(_LenLies(1, 5), batch_size=4), "x"))


# ----------------------------------------------------------------------------- pixel arrays scale by their dtype


def _pixel_means(s: DatasetSplits) -> dict[int, float]:
    """Mean pixel of each class of the training split (every image of a class is one flat value)."""
    return {y: float(x.mean()) for x, y, _ in s.train}


def test_integer_pixel_arrays_scale_by_their_dtype_not_their_values(tmp_path: Path) -> None:
    from PIL import Image

    y = np.arange(12) % 2
    dark16 = np.stack([np.full((4, 4), 50 if c == 0 else 200, np.uint16) for c in y])  # of 65535
    split = {"val_fraction": 0.0, "test_fraction": 0.0}
    want = {0: 50 / 65535, 1: 200 / 65535}
    for x in (dark16, torch.from_numpy(dark16)):  # torch has no min/max for uint16: numpy does the work
        got = _pixel_means(from_arrays(x, y, **split))
        assert got == pytest.approx(want, abs=1e-8)
    # the same pixels as 16-bit PNGs read the same through image_folder
    for i, (img, c) in enumerate(zip(dark16, y, strict=True)):
        (tmp_path / str(c)).mkdir(exist_ok=True)
        Image.fromarray(img).save(tmp_path / str(c) / f"{i}.png")
    assert _pixel_means(image_folder(tmp_path, grayscale=True, **split)) == pytest.approx(want, abs=1e-8)
    # uint8 and integers without a pixel range (int64 here) are 8-bit: / 255; an int 0/1 mask gives 1/255
    for dtype in (np.uint8, np.int64, np.int32):
        got = _pixel_means(
            from_arrays(np.stack([np.full((4, 4), 51 * (1 + 3 * c), dtype) for c in y]), y, **split)
        )
        assert got == pytest.approx({0: 0.2, 1: 0.8}, abs=1e-7)
    mask = _pixel_means(from_arrays(np.stack([np.full((4, 4), c, np.int64) for c in y]), y, **split))
    assert mask == pytest.approx({0: 0.0, 1: 1 / 255}, abs=1e-8)
    # such integers beyond 8 bits (16-bit data in an int32 array) are refused, not read as 8-bit or clipped
    with pytest.raises(
        LatentccError,
        match=r"'x' parameter of from_arrays must be integer pixels in 0\.\.255 "
        r"for dtype int32 .*Got 'values from 50 to 60000'.*Fix: x\.astype\(np\.uint16\)",
    ):
        from_arrays(np.stack([np.full((4, 4), 50 if c == 0 else 60000, np.int32) for c in y]), y)
    with pytest.raises(LatentccError, match=r"dtype bool.*Fix: x\.astype\(np\.float32\)"):
        from_arrays(np.stack([np.full((4, 4), bool(c)) for c in y]), y)


def test_hf_array_column_keeps_its_declared_dtype(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    y = [i % 2 for i in range(12)]
    pix = np.stack([np.full((4, 4), 50 if c == 0 else 200, np.uint16) for c in y])
    feats = datasets.Features({"pix": datasets.Array2D((4, 4), "uint16"), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"pix": pix, "label": y}, features=feats).save_to_disk(str(tmp_path / "a16"))
    # datasets' numpy format hands the column over as int64: the declared uint16 still decides the scale
    s = from_hf_disk(tmp_path / "a16", val_fraction=0.0, test_fraction=0.0)
    assert _pixel_means(s) == pytest.approx({0: 50 / 65535, 1: 200 / 65535}, abs=1e-8)
    lists = datasets.Features(
        {
            "pix": datasets.Sequence(datasets.Sequence(datasets.Value("uint16"))),
            "label": datasets.Value("int64"),
        }
    )
    ds = datasets.Dataset.from_dict({"pix": pix.tolist(), "label": y}, features=lists)
    s = from_hf(ds, val_fraction=0.0, test_fraction=0.0)
    assert _pixel_means(s) == pytest.approx({0: 50 / 65535, 1: 200 / 65535}, abs=1e-8)


def test_train_and_test_pixels_of_two_dtypes_share_one_scale() -> None:
    y = np.arange(8) % 2
    eight = np.stack([np.full((4, 4), 51 if c == 0 else 204, np.uint8) for c in y])
    sixteen = np.stack([np.full((4, 4), 13107 if c == 0 else 52428, np.uint16) for c in y])  # 0.2 and 0.8
    s = make_splits(eight, y, ["a", "b"], name="t", kind="image", val_fraction=0.0, test=(sixteen, y))
    assert _pixel_means(s) == pytest.approx({0: 0.2, 1: 0.8}, abs=1e-7)
    assert {c: float(x.mean()) for x, c, _ in s.test} == pytest.approx({0: 0.2, 1: 0.8}, abs=1e-7)


def test_indexed_dataset_converts_tensors_that_are_not_storage() -> None:
    x = torch.from_numpy(np.full((4, 1, 2, 2), 65535, np.uint16))
    ds = IndexedDataset(x, [0, 1, 0, 1], classes=["a", "b"], kind="image")
    assert ds[0][0].dtype == torch.float32 and float(ds[0][0].max()) == 1.0
    with pytest.raises(
        LatentccError, match=r"'data' parameter of IndexedDataset must be integer pixels in 0\.\.255"
    ):
        IndexedDataset(torch.full((4, 1, 2, 2), 300), [0, 1, 0, 1], classes=["a", "b"], kind="image")


# ----------------------------------------------------------------------------- round 3: labels, ClassLabel order, tRNS


def _transparent_key_folder(root: Path) -> Path:
    """root/a (8-bit) and root/b (16-bit): the same gray 0.2 image, left half a transparent-colour key."""
    from PIL import Image

    a8 = np.full((4, 4), 51, np.uint8)
    a8[:, :2] = 7
    a16 = np.full((4, 4), 13107, np.uint16)  # 0.2 of 65535
    a16[:, :2] = 1234
    for cls, arr, key in (("a", a8, 7), ("b", a16, 1234)):
        (root / cls).mkdir(parents=True)
        Image.fromarray(arr).save(root / cls / "x.png", transparency=key)
    return root


def test_a_transparent_colour_key_is_white_at_every_bit_depth(tmp_path: Path) -> None:
    s = image_folder(
        _transparent_key_folder(tmp_path / "imgs"), grayscale=True, val_fraction=0.0, test_fraction=0.0
    )
    rows = {int(y): x[0].numpy() for x, y, _ in s.train}
    for label in (0, 1):  # 8-bit and 16-bit read alike: the keyed half white, the rest 0.2
        np.testing.assert_allclose(rows[label][:, :2], 1.0)
        np.testing.assert_allclose(rows[label][:, 2:], 0.2, atol=1e-6)


def test_lab_images_are_converted_to_srgb(tmp_path: Path) -> None:
    from PIL import Image

    for cls, lightness in (("a", 51), ("b", 204)):  # L* = 20 and 80, a* = b* = 0: a neutral gray
        (tmp_path / cls).mkdir()
        lab = np.dstack(
            [np.full((4, 4), lightness, np.uint8), np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]
        )
        Image.fromarray(lab, "LAB").save(tmp_path / cls / "x.tif")
    s = image_folder(tmp_path, val_fraction=0.0, test_fraction=0.0)
    means = {int(y): x.numpy() for x, y, _ in s.train}
    np.testing.assert_allclose(means[0], 48 / 255)  # sRGB of L* = 20, not the raw L*a*b* bytes
    np.testing.assert_allclose(means[1], 198 / 255)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (
            np.arange(20) % 2 * 0.5,
            r"'y' parameter of from_arrays must be integer class ids.*fractional labels \[0\.5\]",
        ),
        (
            np.where(np.arange(20) % 2, 1.0, np.nan),
            r"'y' parameter .* finite class ids.*10 non-finite labels at pos",
        ),
        (np.arange(20) % 2 - 1, r"'y' parameter .* class ids >= 0.*10 negative labels \[-1\].*x\[y >= 0\]"),
        (
            [None] + [1, 0] * 9 + [1],
            r"'y' parameter .* a class label for every sample.*None\) at positions \[0\]",
        ),
        (np.arange(20) % 2 * 10**6, r"'y' parameter .*ids up to 1000000 for 2 distinct labels.*np\.unique"),
        (np.arange(20) % 2 * 10**9, r"'y' parameter .*ids up to 1000000000 for 2 distinct labels"),
        (
            (np.arange(20) % 2).astype(np.uint64) + np.uint64(2**63),
            r"'y' parameter .*ids up to 9223372036854775809",
        ),
    ],
)
def test_labels_are_checked_at_the_door(labels: object, pattern: str) -> None:
    with pytest.raises(LatentccError, match=pattern):
        from_arrays(np.zeros((20, 4, 4), np.uint8), labels)


def test_bool_labels_are_classes_false_and_true() -> None:
    y = np.arange(20) % 2 == 1
    s = from_arrays(np.zeros((20, 4, 4), np.uint8), y, val_fraction=0.0, test_fraction=0.0)
    assert s.classes == ["False", "True"]
    assert s.summary()["class_counts"]["train"] == [10, 10]
    s = make_splits(
        np.zeros((20, 4, 4), np.uint8), y, ["no", "yes"], name="b", kind="image", test_fraction=0.0
    )
    assert s.summary()["class_counts"]["train"] + s.summary()["class_counts"]["val"] == [9, 9, 1, 1]


def test_small_label_gaps_and_explicit_classes_are_still_allowed() -> None:
    x = np.zeros((40, 4, 4), np.uint8)
    assert len(from_arrays(x, np.repeat([0, 2, 4, 999], 10)).classes) == 1000  # 1000 classes: under the rule
    s = from_arrays(x, np.repeat([0, 1, 2, 3000], 10), classes=[str(i) for i in range(3001)])
    assert s.num_classes == 3001  # the caller named every class: no sparse-id refusal
    with pytest.raises(
        LatentccError, match=r"ids up to 3000 for 4 distinct labels: 3001 classes, 2997 of them"
    ):
        from_arrays(x, np.repeat([0, 1, 2, 3000], 10))


def _hf_images(values: list[float]) -> list[dict[str, object]]:
    import io

    from PIL import Image

    out = []
    for v in values:
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4), round(v * 255), np.uint8)).save(buf, "png")
        out.append({"bytes": buf.getvalue(), "path": None})
    return out


def test_hf_test_split_classlabel_ids_follow_the_train_names() -> None:
    datasets = pytest.importorskip("datasets")
    y = [i % 2 for i in range(20)]
    imgs = _hf_images([0.2 if t == 0 else 0.8 for t in y])  # cat 0.2, dog 0.8
    feats = [datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=n)})
             for n in (["cat", "dog"], ["dog", "cat"])]  # fmt: skip
    dd = datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": imgs, "label": y}, features=feats[0]),
        test=datasets.Dataset.from_dict({"image": imgs, "label": [1 - t for t in y]}, features=feats[1]),
    )
    s = from_hf(dd, val_fraction=0.0)
    assert s.classes == ["cat", "dog"]
    for x, label, _ in s.test:  # test id 1 is "cat" in its own names: class 0 of train
        assert round(float(x.mean()), 1) == (0.2 if label == 0 else 0.8)
    extra = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "bird"])}
    )
    dd["test"] = datasets.Dataset.from_dict({"image": imgs, "label": y}, features=extra)
    with pytest.raises(
        LatentccError, match=r"test split's ClassLabel in column 'label' has the names \['bird'\]"
    ):
        from_hf(dd, val_fraction=0.0)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        ([True, False] * 10, None),
        (
            [0.0, 0.5] * 10,
            r"'label_column' parameter of from_hf .*fractional labels \[0\.5\] at rows \[1, 3, 5",
        ),
        ([None] + [1, 0] * 9 + [1], r"None\) at rows \[0\] of the train split's column 'label'"),
        ([0, 10**6] * 10, r"ids up to 1000000 for 2 distinct labels"),
    ],
)
def test_hf_label_columns_are_checked_by_the_same_rule(labels: list[object], pattern: str | None) -> None:
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"image": _hf_images([0.5] * 20), "label": labels})
    ds = ds.cast_column("image", datasets.Image())
    if pattern is None:
        assert from_hf(ds, val_fraction=0.0, test_fraction=0.0).classes == ["False", "True"]
        return
    with pytest.raises(LatentccError, match=pattern):
        from_hf(ds, val_fraction=0.0, test_fraction=0.0)


def test_hf_row_without_an_image_is_named() -> None:
    datasets = pytest.importorskip("datasets")
    imgs: list[object] = list(_hf_images([0.5] * 20))
    imgs[3] = None
    ds = datasets.Dataset.from_dict({"image": imgs, "label": [i % 2 for i in range(20)]})
    ds = ds.cast_column("image", datasets.Image())
    with pytest.raises(
        LatentccError, match=r"1 rows of the image column 'image' hold no image \(None\): rows \[3\]"
    ):
        from_hf(ds, val_fraction=0.0, test_fraction=0.0)
