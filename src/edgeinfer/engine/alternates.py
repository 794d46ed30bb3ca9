"""Files of a build that another runtime runs instead: the TFLite twin LiteRT runs for an FP32 ONNX build.

Here, above the runtimes and the models, because choosing needs both: whether LiteRT is installed
and which runtime was asked for (the registry), and how to write the twin (``models``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from edgeinfer.errors import IntegrityError, RuntimeUnavailable
from edgeinfer.models.config import ModelConfig
from edgeinfer.models.tflite_export import tflite_twin
from edgeinfer.runtimes.registry import canonical, factory


def alternate_runtimes(fmt: str) -> tuple[str, ...]:
    """Installed runtimes that run a build of format ``fmt`` through another file of it (LiteRT
    runs an ONNX build's TFLite twin), whatever the build's precision."""
    return ("litert",) if fmt == "onnx" and factory("litert").available() else ()


def litert_fp32_only(name: str, precision: str) -> str:
    """Why LiteRT cannot run an ONNX build of ``name`` in ``precision``."""
    return (
        f"LiteRT runs {name} in FP32 only (a .tflite converted from the FP32 ONNX build), not "
        f"{precision}; use onnxruntime or openvino for {precision}, or import a .tflite you have "
        "(edgeinfer models import)"
    )


def litert_files(config: ModelConfig, onnx_path: Path, runtime: str) -> dict[str, Callable[[], Path]]:
    """``{"litert": twin}`` when ``runtime`` (a runtime's name or alias, or ``"auto"``) may run this
    ONNX build on LiteRT through its TFLite twin, else ``{}``; ``twin()`` returns the twin's path,
    writing or checking it (:func:`tflite_twin`) only then, so a load that ends up on another
    runtime never touches it.

    Only FP32 builds have a twin, only with LiteRT installed, and only for graphs made of the ops
    the zoo uses (``twin()`` raises :class:`RuntimeUnavailable` for others). Asking for ``litert``
    by name when the build cannot have one raises :class:`RuntimeUnavailable` saying why; ``auto``
    just leaves LiteRT out.
    """
    wanted = runtime.strip().lower()
    named = wanted != "auto"
    if config.format != "onnx" or (named and canonical(wanted) != "litert"):
        return {}
    if not alternate_runtimes(config.format) or config.precision != "fp32":
        if not named:
            return {}
        if config.precision != "fp32":
            raise RuntimeUnavailable(litert_fp32_only(config.name, config.precision))
        raise RuntimeUnavailable("runtime 'litert' is not installed; pip install 'edgeinfer[litert]'")

    def twin() -> Path:
        try:
            return tflite_twin(onnx_path, config.file_sha256)
        except (RuntimeUnavailable, IntegrityError) as exc:
            raise RuntimeUnavailable(f"LiteRT cannot run {config.name}: {exc}") from exc

    return {"litert": twin}
