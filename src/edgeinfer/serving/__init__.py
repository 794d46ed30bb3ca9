"""The inference server: KServe v2 protocol, batching, data plane, REST and gRPC adapters, load generator."""
