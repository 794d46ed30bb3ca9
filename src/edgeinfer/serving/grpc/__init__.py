"""The gRPC adapter and the generated KServe v2 stubs."""
