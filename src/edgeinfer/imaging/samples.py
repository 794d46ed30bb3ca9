"""Real photos that ship inside common Python packages (scikit-image, matplotlib, scikit-learn).

They give the demo, the tests, the benchmarks and INT8 calibration real images without any
download. Each is found on disk without importing its package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgeinfer.errors import NotFound


@dataclass(frozen=True)
class SamplePhoto:
    """A photo file inside an installed package."""

    name: str
    package: str
    relative_path: str
    distribution: str

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.is_file() else None


def _skimage(name: str) -> SamplePhoto:
    return SamplePhoto(name.split(".", maxsplit=1)[0], "skimage", f"data/{name}", "scikit-image")


PHOTOS: tuple[SamplePhoto, ...] = (
    _skimage("chelsea.png"),
    _skimage("coffee.png"),
    _skimage("astronaut.png"),
    _skimage("rocket.jpg"),
    _skimage("motorcycle_left.png"),
    _skimage("motorcycle_right.png"),
    _skimage("hubble_deep_field.jpg"),
    _skimage("retina.jpg"),
    _skimage("ihc.png"),
    _skimage("camera.png"),
    _skimage("horse.png"),
    _skimage("coins.png"),
    _skimage("moon.png"),
    _skimage("brick.png"),
    _skimage("grass.png"),
    _skimage("gravel.png"),
    _skimage("color.png"),
    _skimage("logo.png"),
    _skimage("page.png"),
    _skimage("text.png"),
    _skimage("cell.png"),
    _skimage("clock_motion.png"),
    SamplePhoto("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "matplotlib"),
    SamplePhoto(
        "minduka_present", "matplotlib", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png", "matplotlib"
    ),
    SamplePhoto("china", "sklearn", "datasets/images/china.jpg", "scikit-learn"),
    SamplePhoto("flower", "sklearn", "datasets/images/flower.jpg", "scikit-learn"),
)

# The photos whose subject is clear enough to name a single right answer (MobileNetV2, ImageNet-1k).
DEMO_PHOTOS = ("chelsea", "coffee", "grace_hopper", "rocket", "china")


def photo(name: str) -> Path:
    """The path of one sample photo; NotFound if its package is not installed."""
    for candidate in PHOTOS:
        if candidate.name == name:
            path = candidate.path()
            if path is None:
                raise NotFound(
                    f"sample photo {name!r} ships with {candidate.distribution}, which is not installed "
                    "(pip install 'edgeinfer[samples]')"
                )
            return path
    raise NotFound(f"no sample photo named {name!r}; known: {', '.join(p.name for p in PHOTOS)}")


def available_photos(names: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Every installed sample photo (or just ``names``) by name."""
    wanted = [p for p in PHOTOS if names is None or p.name in names]
    found = {p.name: p.path() for p in wanted}
    return {name: path for name, path in found.items() if path is not None}
