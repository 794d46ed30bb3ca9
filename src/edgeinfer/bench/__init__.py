"""Benchmarks: MLPerf scenarios through LoadGen, HDR latency statistics, resource sampling, reports.

Modules are imported on demand (``edgeinfer.bench.report`` for the schema and ``write_report``;
``edgeinfer.bench.session`` to run a benchmark) so that importing the package stays cheap.
"""
