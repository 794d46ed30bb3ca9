"""The server as an ASGI application factory, for running under any ASGI server.

    EDGEINFER_SERVE_CONFIG=serve.toml uvicorn --factory edgeinfer.serving.asgi:create_app --port 8000
    EDGEINFER_SERVE_CONFIG=serve.toml granian --interface asgi --factory edgeinfer.serving.asgi:create_app

Models load in the ASGI lifespan (ready after warm-up) and the gRPC listener starts with them unless
the config says ``grpc_enabled = false``. ``edgeinfer serve`` is the supported way to run; this
exists so other HTTP servers can be measured against it on the same application. An offload policy
other than ``edge`` needs ``edgeinfer serve`` (which brings the network layer's router).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgeinfer.serving.rest.app import RestApp
from edgeinfer.serving.settings import ServeSettings

CONFIG_ENV = "EDGEINFER_SERVE_CONFIG"


def create_app() -> RestApp:
    from edgeinfer.serving.server import InferenceServer

    config = os.environ.get(CONFIG_ENV)
    settings = ServeSettings.load(Path(config) if config else None)
    return InferenceServer(settings).app
