"""HTTP bodies of Triton's extensions that its clients and tools call: model configuration
(``GET /v2/models/{m}/config``), statistics (``GET /v2/models[/{m}[/versions/{v}]]/stats``) and the
repository index (``POST /v2/repository/index``), in the JSON Triton answers with."""

from __future__ import annotations

from typing import Any

import orjson

from edgeinfer.errors import InvalidInput
from edgeinfer.serving.codecs.rest import dumps
from edgeinfer.serving.protocol import ConfigTensor, RepositoryModel, ServedModelConfig
from edgeinfer.serving.statistics import Duration, ModelStatistics

_NONE = {"count": 0, "ns": 0}  # what this server does not measure (no response cache here)


def triton_data_type(datatype: str) -> str:
    """A v2 datatype as Triton's model configuration names it (``BYTES`` is ``TYPE_STRING``)."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def encode_model_config(config: ServedModelConfig) -> bytes:
    def tensor(t: ConfigTensor) -> dict[str, Any]:
        document: dict[str, Any] = {
            "name": t.name,
            "data_type": triton_data_type(t.datatype),
            "dims": list(t.dims),
        }
        if t.optional:
            document["optional"] = True
        return document

    return dumps(
        {
            "name": config.name,
            "platform": config.platform,
            "backend": config.platform,
            "max_batch_size": config.max_batch_size,
            "input": [tensor(t) for t in config.inputs],
            "output": [tensor(t) for t in config.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": config.max_queue_delay_us},
        }
    )


def encode_model_statistics(stats: list[ModelStatistics]) -> bytes:
    def duration(d: Duration) -> dict[str, int]:
        return {"count": d.count, "ns": d.ns}

    def model(s: ModelStatistics) -> dict[str, Any]:
        return {
            "name": s.name,
            "version": s.version,
            "last_inference": s.last_inference_ms,
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "inference_stats": {
                "success": duration(s.success),
                "fail": duration(s.fail),
                "queue": duration(s.queue),
                "compute_input": duration(s.compute_input),
                "compute_infer": duration(s.compute_infer),
                "compute_output": duration(s.compute_output),
                "cache_hit": _NONE,
                "cache_miss": _NONE,
            },
            "batch_stats": [
                {
                    "batch_size": b.batch_size,
                    "compute_input": _NONE,
                    "compute_infer": duration(b.compute_infer),
                    "compute_output": _NONE,
                }
                for b in s.batches
            ],
            "memory_usage": [],
        }

    return dumps({"model_stats": [model(s) for s in stats]})


def decode_repository_index_request(body: bytes) -> bool:
    """Whether the index request asks for ready models only (``{"ready": true}``; empty: all)."""
    if not body.strip():
        return False
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the repository index request is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput('the repository index request must be a JSON object, e.g. {"ready": true}')
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInput(f"'ready' must be true or false, got {ready!r}")
    return ready


def encode_repository_index(models: list[RepositoryModel]) -> bytes:
    def entry(m: RepositoryModel) -> dict[str, str]:
        document = {"name": m.name, "version": m.version, "state": m.state}
        if m.reason:
            document["reason"] = m.reason
        return document

    return dumps([entry(m) for m in models])
