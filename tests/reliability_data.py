"""Reliability cases of data, models and configs: images of every bit depth, datasets whose length lies,
absurd config values, Hugging Face column names, `latentcc layers`, and messages that name what the user
passed. Collected by tests/reliability_cases.py."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from latentcc.plumbing.errors import LatentccError
from reliability_base import Case

L = LatentccError
_16 = np.array([[0, 32768], [65535, 255]], dtype=np.uint16)  # 16-bit pixels: 0, 0.5000076, 1.0, 0.0038911


# ----------------------------------------------------------------------------- images


def _folder(files: dict[str, Any]) -> Any:
    """A setup writing ``imgs/<class>/<name>`` for classes a and b, each file made by ``files[name]()``."""

    def setup(tmp: Path) -> None:
        for c in "ab":
            (tmp / "imgs" / c).mkdir(parents=True)
            for name, make in files.items():
                make().save(tmp / "imgs" / c / name)

    return setup


def _pil(array: np.ndarray, raw_mode: str | None = None) -> Any:
    """A maker of the PIL image of ``array`` (its mode from the dtype, or ``raw_mode`` from its bytes)."""
    from PIL import Image

    if raw_mode is None:
        return lambda: Image.fromarray(array)
    return lambda: Image.frombytes(raw_mode, (array.shape[1], array.shape[0]), array.tobytes())


def _works_16bit(tmp: Path) -> str:
    from latentcc.data import image_folder

    s = image_folder(tmp / "imgs", grayscale=True, val_fraction=0.0, test_fraction=0.0)
    x = s.train[0][0].flatten().tolist()
    return f"works: the 16-bit pixels 0, 32768, 65535, 255 read {', '.join(f'{v:.7f}' for v in x)}"


def _works_mixed(tmp: Path) -> str:
    from latentcc.data import image_folder

    s = image_folder(tmp / "imgs", grayscale=True, val_fraction=0.0, test_fraction=0.0)
    by_file = {int(src): s.train[i][0] for i, src in enumerate(s.train.source_index)}
    eight, sixteen = (
        by_file[0].flatten()[1].item(),
        by_file[1].flatten()[1].item(),
    )  # files a/1_8.png, a/2_16.png
    return f"works: an 8-bit 128 reads {eight:.5f} and a 16-bit 32768 reads {sixteen:.5f} in one folder"


def _works_transparent(tmp: Path) -> str:
    from latentcc.data import image_folder

    s = image_folder(tmp / "imgs", grayscale=True, val_fraction=0.0, test_fraction=0.0)
    return f"works: transparent pixels read {s.train[0][0].flatten().tolist()}"


def _palette_with_transparency() -> Any:
    from PIL import Image

    img = Image.new("P", (2, 2))
    img.putdata([0, 1, 2, 3])
    img.putpalette([0, 0, 0, 90, 90, 90, 180, 180, 180, 250, 250, 250])
    img.info["transparency"] = 0  # index 0 (black) is see-through
    return img


# ----------------------------------------------------------------------------- datasets and configs


class _Short(Dataset):
    """Says it holds 100 samples, holds 80 (a __len__ left over from before a filter)."""

    def __init__(self) -> None:
        self.x = torch.rand(80, 6, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> Any:
        return self.x[i], i % 4, i


def _fit_short(tmp: Path) -> Any:
    from latentcc.config import TrainConfig
    from latentcc.train import fit

    torch.manual_seed(0)
    data = SimpleNamespace(train=_Short(), val=_Short(), test=_Short())
    cfg = TrainConfig(epochs=1, batch_size=16, progress=False, tensorboard=False, device="cpu")
    return fit(nn.Sequential(nn.Linear(6, 4)), data, config=cfg)


def _collect_short(tmp: Path) -> Any:
    from latentcc.latents.collect import collect_latents

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    return collect_latents(model, DataLoader(_Short(), batch_size=32), ["1"], progress=False)


def _hf_saved(tmp: Path) -> None:
    import datasets

    texts = [f"{w} film" for w in ["good", "bad"] * 10]
    ds = datasets.Dataset.from_dict({"review": texts, "stars": [i % 2 for i in range(20)]})
    ds.save_to_disk(str(tmp / "reviews"))


def _works_hf_columns(tmp: Path) -> str:
    from latentcc.data import load_dataset

    s = load_dataset(tmp / "reviews", label_column="stars", input_column="review")
    return f"works: {s.kind} data, classes {s.classes}, {sum(s.summary()['sizes'].values())} samples"


def _works_layers_cli(tmp: Path) -> str:
    from latentcc.app.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["layers", "--model", "mnist-cnn"])
    row = next(line for line in out.getvalue().splitlines() if line.startswith("net.conv_layers.0 "))
    return f"works: exit {code}, row {' '.join(row.split())!r}"


def _model_for(model: str, data: str) -> Any:
    from latentcc.app.finetune import build_model
    from latentcc.config import ModelConfig

    splits = SimpleNamespace(kind=data, name=f"{data}-data", num_classes=3)
    return build_model(ModelConfig(model=model), splits)


def _dark_16bit() -> tuple[np.ndarray, np.ndarray]:
    """12 8x8 uint16 images: class 0 all 50, class 1 all 200 (of 65535: dark 16-bit pixels)."""
    y = np.arange(12) % 2
    return np.stack([np.full((8, 8), 50 if c == 0 else 200, np.uint16) for c in y]), y


def _class_means(s: Any) -> str:
    means = {int(c): float(x.mean()) for x, c, _ in s.train}
    return f"{means[0]:.6f} / {means[1]:.6f}"


def _hf_uint16_saved(tmp: Path) -> None:
    import datasets

    x, y = _dark_16bit()
    feats = datasets.Features({"pix": datasets.Array2D((8, 8), "uint16"), "label": datasets.Value("int64")})
    datasets.Dataset.from_dict({"pix": x, "label": y.tolist()}, features=feats).save_to_disk(str(tmp / "a16"))


def _works_hf_uint16(tmp: Path) -> str:
    from latentcc.data import from_hf_disk

    s = from_hf_disk(tmp / "a16", val_fraction=0.0, test_fraction=0.0)
    return f"works: pixel means {_class_means(s)} (50 / 65535 = 0.000763, 200 / 65535 = 0.003052)"


def _works_arrays_uint16(tmp: Path) -> str:
    from latentcc.data import from_arrays

    x, y = _dark_16bit()
    s = from_arrays(x, y, val_fraction=0.0, test_fraction=0.0)
    return f"works: pixel means {_class_means(s)}, the values / 65535 as for a 16-bit PNG"


# ----------------------------------------------------------------------------- round 3: labels, ClassLabel, tRNS


def _trns_setup(tmp: Path) -> None:
    """imgs/a: an 8-bit and imgs/b: a 16-bit gray PNG, 0.2 gray with the left half a transparent-colour key."""
    from PIL import Image

    a8 = np.full((2, 4), 51, np.uint8)
    a8[:, :2] = 7
    a16 = np.full((2, 4), 13107, np.uint16)
    a16[:, :2] = 1234
    for cls, arr, key in (("a", a8, 7), ("b", a16, 1234)):
        (tmp / "imgs" / cls).mkdir(parents=True)
        Image.fromarray(arr).save(tmp / "imgs" / cls / "x.png", transparency=key)


def _works_trns(tmp: Path) -> str:
    from latentcc.data import image_folder

    s = image_folder(tmp / "imgs", grayscale=True, val_fraction=0.0, test_fraction=0.0)
    rows = {int(y): x.flatten().tolist()[:4] for x, y, _ in s.train}
    return f"works: row 0 of the 8-bit image {[round(v, 3) for v in rows[0]]}, of the 16-bit image " + str(
        [round(v, 3) for v in rows[1]]
    )


def _hf_png(values: list[float]) -> list[Any]:
    from PIL import Image

    out: list[Any] = []
    for v in values:
        buf = io.BytesIO()
        Image.fromarray(np.full((4, 4), round(v * 255), np.uint8)).save(buf, "png")
        out.append({"bytes": buf.getvalue(), "path": None})
    return out


def _hf_swapped(test_names: list[str]) -> Any:
    import datasets

    y = [i % 2 for i in range(20)]
    imgs = _hf_png([0.2 if t == 0 else 0.8 for t in y])  # cat 0.2, dog 0.8
    feat = lambda n: datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=n)})  # noqa: E731
    test_y = [1 - t for t in y] if test_names == ["dog", "cat"] else y
    return datasets.DatasetDict(
        train=datasets.Dataset.from_dict({"image": imgs, "label": y}, features=feat(["cat", "dog"])),
        test=datasets.Dataset.from_dict({"image": imgs, "label": test_y}, features=feat(test_names)),
    )


def _works_hf_classlabel_order(tmp: Path) -> str:
    from latentcc.data import from_hf

    s = from_hf(_hf_swapped(["dog", "cat"]), val_fraction=0.0)
    means = sorted({(s.classes[int(y)], round(float(x.mean()), 1)) for x, y, _ in s.test})
    return f"works: test labels matched to the train classes by name: (class, pixel) {means}"


def _hf_one(column: str, values: list[Any]) -> Any:
    import datasets

    data: dict[str, Any] = {
        "image": _hf_png([0.5] * len(values)),
        "label": [i % 2 for i in range(len(values))],
    }
    data[column] = values
    return datasets.Dataset.from_dict(data).cast_column("image", datasets.Image())


def _works_bool_labels(tmp: Path) -> str:
    from latentcc.data import from_arrays

    s = from_arrays(
        np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2 == 1, val_fraction=0.0, test_fraction=0.0
    )
    return f"works: bool labels give classes {s.classes}, counts {s.summary()['class_counts']['train']}"


def cases() -> list[Case]:
    from latentcc.config import DataConfig, LCCConfig, ModelConfig, TrainConfig, config_from_dict
    from latentcc.data import from_arrays, from_hf, image_folder, load_dataset
    from latentcc.models import load_model

    imgs = lambda t: image_folder(t / "imgs")  # noqa: E731
    return [
        # --- images of every bit depth
        Case("image-16bit-png", "image_folder of 16-bit grayscale PNGs (mode I;16)", _works_16bit,
             None, r"works: .* read 0\.0000000, 0\.5000076, 1\.0000000, 0\.0038911",
             _folder({"x.png": _pil(_16)})),
        Case("image-16bit-tiff-big-endian", "image_folder of big-endian 16-bit TIFFs (mode I;16B)", _works_16bit,
             None, r"works: .* read 0\.0000000, 0\.5000076, 1\.0000000, 0\.0038911",
             _folder({"x.tif": _pil(_16.astype(">u2"), "I;16B")})),
        Case("image-mixed-bit-depths", "image_folder mixing 8-bit and 16-bit PNGs", _works_mixed,
             None, r"works: an 8-bit 128 reads 0\.50196 and a 16-bit 32768 reads 0\.50001",
             _folder({"1_8.png": _pil(np.full((2, 2), 128, np.uint8)), "2_16.png": _pil(_16)})),
        Case("image-palette-transparency", "image_folder of palette PNGs whose index 0 is transparent",
             _works_transparent, None, r"works: transparent pixels read \[1\.0, 0\.3529",
             _folder({"p.png": _palette_with_transparency})),
        Case("image-float-tiff-out-of-range", "image_folder of float TIFFs with values 0..1000", imgs,
             L, r"The image .*x\.tif has mode 'F' .*values from 0 to 1000; float pixels must lie in \[0, 1\].*Fix",
             _folder({"x.tif": _pil(np.array([[0, 1000]], np.float32))})),
        Case("image-float-tiff-nan", "image_folder of float TIFFs with a NaN pixel", imgs,
             L, r"x\.tif has mode 'F' .*non-finite values.*Fix: rescale",
             _folder({"x.tif": _pil(np.array([[0, np.nan]], np.float32))})),
        Case("hf-array-uint16-dark", "from_hf_disk of an Array2D((8, 8), 'uint16') column holding 50 and 200",
             _works_hf_uint16, None, r"works: pixel means 0\.000763 / 0\.003052 \(50 / 65535", _hf_uint16_saved),
        Case("arrays-uint16", "from_arrays(uint16 images holding 50 and 200, y)", _works_arrays_uint16,
             None, r"works: pixel means 0\.000763 / 0\.003052, the values / 65535"),
        Case("arrays-int32-beyond-8-bit", "from_arrays(int32 images holding 50 and 60000, y)",
             lambda t: from_arrays(np.stack([np.full((8, 8), v, np.int32) for v in [50, 60000] * 6]),
                                   np.arange(12) % 2),
             L, r"'x' parameter of from_arrays must be integer pixels in 0\.\.255 for dtype int32 \(only uint8 and "
                r"uint16 declare a pixel range.*Got 'values from 50 to 60000'.*Fix: x\.astype\(np\.uint16\)"),
        Case("image-signed-int-tiff", "image_folder of 32-bit signed integer TIFFs (mode I)", imgs,
             L, r"x\.tif is a TIFF of 32-bit signed integers .*no fixed range.*Fix: save it as 8-bit",
             _folder({"x.tif": _pil(np.array([[-5, 70000]], np.int32))})),
        # --- a dataset whose __len__ promises more than it holds
        Case("dataset-len-too-long-fit", "fit on a Dataset whose __len__ says 100 but holds 80", _fit_short,
             L, r"The dataset _Short \(the training split of fit\) says it holds 100 samples.*It reads index 79 "
                r"but not 80.*Fix: make __len__ return"),
        Case("dataset-len-too-long-latents", "collect_latents over a Dataset whose __len__ says 100 but holds 80",
             _collect_short, L, r"_Short \(whose latents are collected\) says it holds 100.*index 79 but not 80"),
        # --- absurd config values
        Case("config-batch-size-huge", "TrainConfig(batch_size=10**30)", lambda t: TrainConfig(batch_size=10**30),
             L, r"'batch_size' parameter of TrainConfig must be an int with 1 <= batch_size <= 2147483647"),
        Case("config-seed-huge", "DataConfig(split_seed=2**40)", lambda t: DataConfig(split_seed=2**40),
             L, r"'split_seed' parameter of DataConfig must be an int with 0 <= split_seed <= 4294967295"),
        Case("config-k-huge", "LCCConfig(k=10**30)", lambda t: LCCConfig(k=10**30),
             L, r"'k' parameter of LCCConfig must be an int with 1 <= k <= 2147483647"),
        Case("config-input-size-huge", "ModelConfig(input_size=10**6)", lambda t: ModelConfig(input_size=10**6),
             L, r"'input_size' parameter of ModelConfig must be an int with 0 <= input_size <= 4096"),
        Case("config-momentum-one", "TrainConfig(momentum=1.0)", lambda t: TrainConfig(momentum=1.0),
             L, r"'momentum' parameter of TrainConfig must be a float in \[0, 1\)"),
        Case("config-bool-as-string", 'a --config file with "progress": "false"',
             lambda t: config_from_dict(TrainConfig, {"progress": "false"}),
             L, r"'progress' parameter of TrainConfig must be True or False. Got 'false'"),
        # --- Hugging Face datasets with other column names
        Case("hf-other-column-names", "load_dataset(saved HF dataset, label_column='stars', input_column='review')",
             _works_hf_columns, None, r"works: text data, classes \['0', '1'\], 20 samples", _hf_saved),
        Case("hf-label-column-missing", "load_dataset of a saved HF dataset without a 'label' column",
             lambda t: load_dataset(t / "reviews"),
             L, r"'label_column' parameter of from_hf must be one of the dataset's columns \['review', 'stars'\]"
                r".*Fix: pass label_column= \(--label-column on the command line\)", _hf_saved),
        Case("hf-column-on-embedded", "load_dataset('digits', label_column='stars')",
             lambda t: load_dataset("digits", label_column="stars"),
             L, r"'label_column' parameter of load_dataset must be left unset for an embedded dataset"),
        Case("dataset-unknown-keyword", "load_dataset('digits', seeds=1)", lambda t: load_dataset("digits", seeds=1),
             L, r"load_dataset\('digits'\) \(an embedded dataset\) got the unknown keyword argument\(s\) "
                r"\['seeds'\].*Did you mean 'seed'"),
        Case("arrays-unknown-keyword", "from_arrays(x, y, val_frac=0.2)",
             lambda t: from_arrays(np.zeros((8, 4)), np.arange(8) % 2, val_frac=0.2),
             L, r"from_arrays got the unknown keyword argument\(s\) \['val_frac'\].*Did you mean 'val_fraction'"),
        # --- models: `latentcc layers`, and messages naming what the user passed
        Case("layers-cli-types-shapes", "latentcc layers --model mnist-cnn", _works_layers_cli,
             None, r"works: exit 0, row 'net\.conv_layers\.0 Conv2d \(B, 32, 28, 28\)'"),
        Case("model-unknown-in-config", "ModelConfig(model='resnet9000') into finetune's model building",
             lambda t: _model_for("resnet9000", "image"),
             L, r"'model' parameter of ModelConfig \(--model\) must be one of \['mnist-cnn'"),
        Case("model-data-kind-mismatch", "the text model minilm on image data",
             lambda t: _model_for("minilm", "image"),
             L, r"takes text input but the data 'image-data' is image; pick an image model \(mnist-cnn"),
        Case("model-unknown-keyword", "load_model('mnist-cnn', 10, input_size=64)",
             lambda t: load_model("mnist-cnn", 10, input_size=64),
             L, r"load_model\('mnist-cnn'\) got the unknown keyword argument\(s\) \['input_size'\]; this model "
                r"takes \['pretrained', 'keep_head'\]"),
        # --- round 3: labels checked at the door, ClassLabel order across splits, 16-bit transparency keys
        Case("image-16bit-transparent-key", "image_folder of 8-bit and 16-bit gray PNGs with a tRNS colour key",
             _works_trns, None, r"works: row 0 of the 8-bit image \[1\.0, 1\.0, 0\.2, 0\.2\], of the 16-bit image "
             r"\[1\.0, 1\.0, 0\.2, 0\.2\]", _trns_setup),
        Case("hf-classlabel-order-differs", "from_hf of a DatasetDict whose test ClassLabel lists ['dog', 'cat']",
             _works_hf_classlabel_order, None, r"works: .*\[\('cat', 0\.2\), \('dog', 0\.8\)\]"),
        Case("hf-classlabel-extra-name", "from_hf of a DatasetDict whose test ClassLabel has a name train lacks",
             lambda t: from_hf(_hf_swapped(["cat", "bird"]), val_fraction=0.0),
             L, r"the test split's ClassLabel in column 'label' has the names \['bird'\].*Fix: append those names"),
        Case("labels-sparse-ids", "from_arrays(x, y * 10**9): 2 classes with ids 0 and 1e9",
             lambda t: from_arrays(np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2 * 10**9),
             L, r"'y' parameter of from_arrays must be class ids 0\.\.K-1.*ids up to 1000000000 for 2 distinct "
                r"labels.*Fix: y = np\.unique\(y, return_inverse=True\)\[1\]"),
        Case("labels-uint64-huge", "from_arrays(x, uint64 labels near 2**63)",
             lambda t: from_arrays(np.zeros((20, 4, 4), np.uint8), (np.arange(20) % 2).astype(np.uint64) + np.uint64(2**63)),
             L, r"'y' parameter of from_arrays must be class ids 0\.\.K-1.*ids up to 9223372036854775809"),
        Case("labels-fractional", "from_arrays(x, labels 0 / 0.5)",
             lambda t: from_arrays(np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2 * 0.5),
             L, r"'y' parameter of from_arrays must be integer class ids.*fractional labels \[0\.5\] at positions "
                r"\[1, 3, 5, 7, 9\]"),
        Case("labels-nan", "from_arrays(x, labels with NaN)",
             lambda t: from_arrays(np.zeros((20, 4, 4), np.uint8), np.where(np.arange(20) % 2, 1.0, np.nan)),
             L, r"'y' parameter of from_arrays must be finite class ids.*10 non-finite labels at positions \[0, 2"),
        Case("labels-negative", "from_arrays(x, labels -1 / 0)",
             lambda t: from_arrays(np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2 - 1),
             L, r"'y' parameter of from_arrays must be class ids >= 0.*10 negative labels \[-1\].*Fix: drop"),
        Case("labels-bool", "from_arrays(x, bool labels)", _works_bool_labels,
             None, r"works: bool labels give classes \['False', 'True'\], counts \[10, 10\]"),
        Case("hf-label-none", "from_hf with None in one row of the label column",
             lambda t: from_hf(_hf_one("label", [None] + [i % 2 for i in range(1, 20)]), val_fraction=0.0),
             L, r"'label_column' parameter of from_hf must be a class label for every sample.*None\) at rows \[0\] "
                r"of the train split's column 'label'"),
        Case("hf-label-fractional", "from_hf with a float label column 0 / 0.5",
             lambda t: from_hf(_hf_one("label", [i % 2 * 0.5 for i in range(20)]), val_fraction=0.0),
             L, r"'label_column' parameter of from_hf must be integer class ids.*fractional labels \[0\.5\] at rows"),
        Case("hf-image-none", "from_hf with None in one row of the image column",
             lambda t: from_hf(_hf_one("image", [None, *_hf_png([0.5] * 19)]), val_fraction=0.0),
             L, r"1 rows of the image column 'image' hold no image \(None\): rows \[0\]\. Fix: drop those rows"),
    ]  # fmt: skip
