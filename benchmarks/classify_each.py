"""A folder of photos classified one by one (``Engine.classify`` in a loop, what ``edgeinfer
classify`` did) against ``Engine.classify_each`` (the next file read, decoded and preprocessed on
the process's helper thread while one is inferred), alternating in one process.

    python benchmarks/classify_each.py --runtime onnxruntime,openvino --precision fp32,int8 --rounds 8

The files are the bench's JPEG samples (camera-like, quality 90) written to a temporary folder.
Each round classifies every file once each way, in an order that reverses every other round;
prints each configuration's median milliseconds per image, the ratio, and the rounds each way won.
Both ways must give the same top-1 for every file, or the script stops.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from edgeinfer.bench.samples import load_samples
from edgeinfer.engine import Engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="onnxruntime")
    parser.add_argument("--precision", default="fp32,int8")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--files", type=int, default=64, help="photos in the folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = []
        for index, sample in enumerate(load_samples(args.files, encoding="jpeg")):
            path = Path(folder) / f"{index:03d}.jpg"
            path.write_bytes(sample.data)
            files.append(str(path))
        for runtime in args.runtime.split(","):
            for precision in args.precision.split(","):
                compare(files, runtime, precision, args.rounds)


def compare(files: list[str], runtime: str, precision: str, rounds: int) -> None:
    with Engine.load("mobilenet_v2", runtime=runtime, precision=precision) as engine:
        engine.warmup()

        def loop() -> list[int]:
            return [engine.classify(path).top.index for path in files]

        def each() -> list[int]:
            return [r.top.index for r in engine.classify_each(files) if not isinstance(r, Exception)]

        if loop() != each():
            raise SystemExit(f"{runtime} {precision}: the two ways disagree")
        ways = {"loop": loop, "classify_each": each}
        seconds: dict[str, list[float]] = {name: [] for name in ways}
        for r in range(rounds):
            for name in list(ways) if r % 2 == 0 else list(ways)[::-1]:
                started = time.perf_counter()
                ways[name]()
                seconds[name].append(time.perf_counter() - started)
        per_image = {name: statistics.median(s) * 1000 / len(files) for name, s in seconds.items()}
        won = sum(b < a for a, b in zip(seconds["loop"], seconds["classify_each"], strict=True))
        print(
            f"{engine.runtime.name:12s} {precision:5s} ms per image: loop {per_image['loop']:6.2f}  "
            f"classify_each {per_image['classify_each']:6.2f}  "
            f"ratio {per_image['loop'] / per_image['classify_each']:.2f}x  "
            f"(classify_each won {won} of {rounds} rounds)",
            flush=True,
        )


if __name__ == "__main__":
    main()
