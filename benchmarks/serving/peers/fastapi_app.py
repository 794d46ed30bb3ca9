"""Plain FastAPI + uvicorn, no batching: each request decodes and infers on its own.

The work runs in Starlette's thread pool (``run_in_threadpool``, what a ``def`` route does), so the
event loop keeps accepting while ONNX Runtime runs. Start: ``uvicorn fastapi_app:app``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from workload import Workload

workload = Workload()
app = FastAPI()


@app.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    data = await request.body()
    return {"predictions": await run_in_threadpool(workload.classify, data)}


@app.get("/health")
def health() -> dict[str, bool]:
    return {"ready": True}
