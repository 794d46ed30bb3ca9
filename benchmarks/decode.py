"""Decode + preprocess cost per image: Pillow against libjpeg-turbo (simplejpeg), full and DCT-scaled.

    python benchmarks/decode.py [--repeats 200]

Prints medians (ms) measured in the same run, and the top-1 agreement of the fast path with
the reference path (Pillow full decode) on MobileNetV2, so the speed is not bought with answers.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from edgeinfer.imaging.decode import DecodeOptions, decode_bytes
from edgeinfer.imaging.preprocess import Preprocessor
from edgeinfer.imaging.samples import available_photos
from edgeinfer.models.config import Preprocessing
from edgeinfer.system.machine import collect


def jpeg_samples() -> dict[str, bytes]:
    """Real photos as JPEG at the sizes cameras send: 640x480 and the originals."""
    samples: dict[str, bytes] = {}
    for name, path in available_photos(("chelsea", "coffee", "grace_hopper", "china", "astronaut")).items():
        image = Image.open(path).convert("RGB")
        variants = (
            (f"{name} {image.width}x{image.height}", image),
            (f"{name} 640x480", image.resize((640, 480))),
            (f"{name} 1920x1080", image.resize((1920, 1080))),
        )
        for label, img in variants:
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=90)
            samples[label] = buffer.getvalue()
    return samples


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    machine = collect()
    print(f"machine: {machine.cpu_model}, {machine.usable_cores} usable cores")
    pre = Preprocessor(Preprocessing())
    scaled = DecodeOptions(min_shorter_px=256)

    def pillow(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))

    print(f"{'image':28s} {'Pillow':>8s} {'turbo':>8s} {'turbo/DCT':>9s} {'preproc':>8s}  speed-up")
    for label, data in jpeg_samples().items():
        t_pil = median_ms(lambda data=data: pillow(data), args.repeats)
        t_turbo = median_ms(lambda data=data: decode_bytes(data), args.repeats)
        t_scaled = median_ms(lambda data=data: decode_bytes(data, scaled), args.repeats)
        rgb = decode_bytes(data)
        t_pre = median_ms(lambda rgb=rgb: pre(rgb), args.repeats)
        print(
            f"{label:28s} {t_pil:8.2f} {t_turbo:8.2f} {t_scaled:9.2f} {t_pre:8.2f}  "
            f"{t_pil / t_turbo:.2f}x / {t_pil / t_scaled:.2f}x"
        )
    agreement(args)


def agreement(args: argparse.Namespace) -> None:
    """Top-1 of MobileNetV2 with the DCT-scaled decode against the full decode, on every sample photo."""
    from edgeinfer.engine import Engine, EngineOptions

    exact = Engine.load(
        "mobilenet_v2", runtime="onnxruntime", threads=1, options=EngineOptions(fast_decode=False)
    )
    fast = Engine.load(
        "mobilenet_v2", runtime="onnxruntime", threads=1, options=EngineOptions(fast_decode=True)
    )
    same = total = 0
    for path in available_photos().values():
        image = Image.open(path).convert("RGB")
        for size in ((1920, 1080), (1280, 720), image.size):
            buffer = io.BytesIO()
            image.resize(size).save(buffer, format="JPEG", quality=90)
            data = buffer.getvalue()
            total += 1
            same += exact.classify(data).top.index == fast.classify(data).top.index
    print(f"top-1 agreement, DCT-scaled vs full decode: {same}/{total} ({same / total:.1%})")


if __name__ == "__main__":
    main()
