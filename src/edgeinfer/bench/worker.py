"""Run one configuration in a fresh process: ``python -m edgeinfer.bench.worker JOB RESULT SPAWN_NS``.

A fresh process per configuration keeps runtimes from sharing memory, threads and caches, makes
peak RSS that configuration's own, and measures cold start as an application sees it: the parent
notes ``time.monotonic_ns()`` (system-wide on Linux) just before starting us, and we note it again at
the first labelled prediction, having imported only the engine by then.

JOB is JSON: the configuration, the run options and the sample files the parent wrote; RESULT is
where the ConfigurationResult JSON goes. Progress lines go to stdout prefixed with ``PROGRESS``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeinfer.bench.loading import ConfigurationSpec, load_engine
from edgeinfer.bench.samples import Sample

if TYPE_CHECKING:
    from edgeinfer.bench.runner import RunOptions

PROGRESS = "PROGRESS "


def options_to_dict(options: RunOptions) -> dict[str, Any]:
    return {
        "scenarios": [s.describe() for s in options.scenarios],
        "batch_sizes": list(options.batch_sizes),
        "top_k": options.top_k,
        "warmup_s": options.warmup_s,
        "model_only_s": options.model_only_s,
        "sample_interval_ms": options.sample_interval_ms,
        "log_root": str(options.log_root) if options.log_root else None,
        "repository": str(options.repository) if options.repository else None,
    }


def options_from_dict(raw: dict[str, Any]) -> RunOptions:
    from edgeinfer.bench.runner import RunOptions
    from edgeinfer.bench.scenarios import Scenario, ScenarioSettings

    scenarios = tuple(
        ScenarioSettings(**{**s, "scenario": Scenario.parse(s["scenario"])}) for s in raw["scenarios"]
    )
    return RunOptions(
        scenarios=scenarios,
        batch_sizes=tuple(raw["batch_sizes"]),
        top_k=raw["top_k"],
        warmup_s=raw["warmup_s"],
        model_only_s=raw["model_only_s"],
        sample_interval_ms=raw["sample_interval_ms"],
        log_root=Path(raw["log_root"]) if raw["log_root"] else None,
        repository=Path(raw["repository"]) if raw["repository"] else None,
    )


def write_job(path: Path, spec: ConfigurationSpec, options: RunOptions, samples: list[Sample]) -> None:
    """Write the job file and one file per sample beside it."""
    sample_dir = path.parent / "samples"
    sample_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for i, sample in enumerate(samples):
        file = sample_dir / f"{i:06d}"
        if not file.exists():
            file.write_bytes(sample.data)
        files.append({"name": sample.name, "file": str(file)})
    job = {"spec": asdict(spec), "options": options_to_dict(options), "samples": files}
    path.write_text(json.dumps(job))


def _emit(message: str) -> None:
    print(PROGRESS + json.dumps({"phase": message}), flush=True)


def main(argv: list[str]) -> int:
    job_path, result_path, spawn_ns = Path(argv[0]), Path(argv[1]), int(argv[2])
    job = json.loads(job_path.read_text())
    spec = ConfigurationSpec(**job["spec"])
    samples = [Sample(s["name"], Path(s["file"]).read_bytes()) for s in job["samples"]]
    repository = Path(job["options"]["repository"]) if job["options"]["repository"] else None
    _emit("loading")
    from edgeinfer.errors import EdgeInferError

    try:
        loaded = load_engine(spec, repository, samples[0].data)
        loaded.process_start_to_first_prediction_ns = time.monotonic_ns() - spawn_ns
        error: EdgeInferError | None = None
    except EdgeInferError as exc:
        error = exc
    # Only now the benchmark's own machinery: LoadGen, HDR histograms, the sampler.
    from edgeinfer.bench.report import to_dict
    from edgeinfer.bench.runner import not_run, run_configuration
    from edgeinfer.errors import ModelNotFound, RuntimeUnavailable

    if error is not None:
        status = "unavailable" if isinstance(error, RuntimeUnavailable | ModelNotFound) else "failed"
        result = not_run(spec, status, str(error))
    else:
        result = run_configuration(spec, samples, options_from_dict(job["options"]), _emit, loaded)
    result_path.write_text(json.dumps(to_dict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
