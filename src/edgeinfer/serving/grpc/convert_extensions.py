"""Triton's gRPC extension messages (model configuration, statistics, repository index) from the
transport-neutral types."""

from __future__ import annotations

from edgeinfer.serving.codecs.rest_extensions import triton_data_type
from edgeinfer.serving.grpc import grpc_predict_v2_pb2 as pb
from edgeinfer.serving.protocol import ConfigTensor, RepositoryModel, ServedModelConfig
from edgeinfer.serving.statistics import Duration, ModelStatistics


def model_config_to_proto(config: ServedModelConfig) -> pb.ModelConfigResponse:
    def data_type(t: ConfigTensor) -> str:
        return triton_data_type(t.datatype)

    return pb.ModelConfigResponse(
        config=pb.ModelConfig(
            name=config.name,
            platform=config.platform,
            backend=config.platform,
            max_batch_size=config.max_batch_size,
            input=[
                pb.ModelInput(name=t.name, data_type=data_type(t), dims=list(t.dims), optional=t.optional)
                for t in config.inputs
            ],
            output=[
                pb.ModelOutput(name=t.name, data_type=data_type(t), dims=list(t.dims)) for t in config.outputs
            ],
            dynamic_batching=pb.ModelDynamicBatching(max_queue_delay_microseconds=config.max_queue_delay_us),
        )
    )


def statistics_to_proto(stats: list[ModelStatistics]) -> pb.ModelStatisticsResponse:
    def duration(d: Duration) -> pb.StatisticDuration:
        return pb.StatisticDuration(count=d.count, ns=d.ns)

    none = Duration()
    return pb.ModelStatisticsResponse(
        model_stats=[
            pb.ModelStatistics(
                name=s.name,
                version=s.version,
                last_inference=s.last_inference_ms,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=pb.InferStatistics(
                    success=duration(s.success),
                    fail=duration(s.fail),
                    queue=duration(s.queue),
                    compute_input=duration(s.compute_input),
                    compute_infer=duration(s.compute_infer),
                    compute_output=duration(s.compute_output),
                    cache_hit=duration(none),
                    cache_miss=duration(none),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=b.batch_size,
                        compute_input=duration(none),
                        compute_infer=duration(b.compute_infer),
                        compute_output=duration(none),
                    )
                    for b in s.batches
                ],
            )
            for s in stats
        ]
    )


def repository_index_to_proto(models: list[RepositoryModel]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=m.name, version=m.version, state=m.state, reason=m.reason
            )
            for m in models
        ]
    )
