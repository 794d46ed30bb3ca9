"""What the load generator sends: real photos as JPEG bytes (or preprocessed tensors), in seeded order."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgeinfer.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from edgeinfer.models.config import Preprocessing


@dataclass(frozen=True)
class Sample:
    """One request's input: ``data`` is encoded image bytes, or a preprocessed float32 sample.
    ``encoding`` says what ``data`` is, in the report schema's words: ``"jpeg"`` (a photo re-encoded
    as a camera sends it) or ``"original"`` (a file's bytes as given)."""

    name: str
    data: bytes
    tensor: np.ndarray | None = None
    encoding: str = "original"


def photo_samples(limit: int = 8) -> list[Sample]:
    """The first ``limit`` of ``edgeinfer bench``'s natural photos as a camera sends them (JPEG; the
    PNGs re-encoded at quality 90): the same bytes, so the same digest, as ``bench --samples N``."""
    from edgeinfer.bench.samples import load_samples

    try:
        photos = load_samples(limit, encoding="jpeg")
    except NotFound as exc:
        raise NotFound(f"{exc}, or pass image files (--images)") from None
    return [Sample(s.name, s.data, encoding="jpeg") for s in photos]


def file_samples(paths: Sequence[Path]) -> list[Sample]:
    samples = []
    for path in paths:
        try:
            samples.append(Sample(path.name, path.read_bytes()))
        except OSError as exc:
            raise NotFound(f"cannot read image {path}: {exc.strerror}") from None
    if not samples:
        raise InvalidInput("give at least one image")
    return samples


def as_tensors(samples: Sequence[Sample], model: str) -> list[Sample]:
    """Preprocess each image here, as ``model`` wants it, so the server only infers."""
    from edgeinfer.imaging.decode import decode_image
    from edgeinfer.imaging.preprocess import Preprocessor

    preprocess = Preprocessor(preprocessing_for(model))
    return [Sample(s.name, s.data, preprocess(decode_image(s.data)), s.encoding) for s in samples]


def preprocessing_for(model: str) -> Preprocessing:
    """``model``'s preprocessing: the zoo's, or the local repository's build of it (an imported
    model), else ImageNet's defaults (224 crop, NCHW, ImageNet mean and std)."""
    from edgeinfer.errors import EdgeInferError
    from edgeinfer.models.config import Preprocessing
    from edgeinfer.models.repository import ModelRepository
    from edgeinfer.models.zoo import ZOO

    if model in ZOO:
        return ZOO[model].preprocessing
    try:
        builds = ModelRepository().builds(model)
    except EdgeInferError:
        builds = []
    return builds[0].config.preprocessing if builds else Preprocessing()


def schedule(samples: Sequence[Sample], seed: int) -> list[Sample]:
    """A seeded shuffle; callers cycle through it."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    return order
