"""Versions of everything a benchmark's numbers depend on, read from package metadata (no imports)."""

from __future__ import annotations

import importlib.metadata
import platform

# Distributions whose version a report states, when installed.
DISTRIBUTIONS = (
    "edgeinfer",
    "numpy",
    "pillow",
    "simplejpeg",
    "onnx",
    "onnxruntime",
    "openvino",
    "ai-edge-litert",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "mlcommons-loadgen",
    "hdrhistogram",
    "psutil",
    "matplotlib",
)

# The distribution that carries each runtime (the runtime's version is that distribution's).
RUNTIME_DISTRIBUTIONS = {
    "onnxruntime": ("onnxruntime",),
    "openvino": ("openvino",),
    "litert": ("ai-edge-litert",),
    "keras": ("keras", "tensorflow-cpu", "tensorflow"),
    "null": ("edgeinfer",),
}


def package_versions() -> dict[str, str]:
    """``distribution -> version`` for every installed one of :data:`DISTRIBUTIONS`, plus Python."""
    found = {"python": platform.python_version()}
    for name in DISTRIBUTIONS:
        version = distribution_version(name)
        if version is not None:
            found[name] = version
    return found


def runtime_version(runtime: str) -> str | None:
    """``keras 3.15.1 + tensorflow-cpu 2.21.0`` style version of one runtime, or None if absent."""
    parts = [
        f"{dist} {version}"
        for dist in RUNTIME_DISTRIBUTIONS.get(runtime, (runtime,))
        if (version := distribution_version(dist)) is not None
    ]
    return " + ".join(parts) if parts else None


def distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
