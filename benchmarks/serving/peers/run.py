"""edgeinfer serve side by side with the common Python serving stacks, under wrk.

The workload (ANCHORS.md, "Serving stacks over HTTP"): POST one JPEG (chelsea, 337x224, quality 90,
about 21 KB); the server decodes, resizes, normalizes, runs MobileNetV2 FP32 on ONNX Runtime (2
intra-op threads, spinning off) and answers the top-5. Each stack runs its own dynamic batching where
it has one (max 8, 5 ms wait); plain FastAPI has none. Closed loop: wrk, 2 threads, 1 then 16
connections, ``--duration`` seconds each, after a short unrecorded warm-up.

Each peer runs from its own virtualenv (``--venvs``, default /tmp/peers/venv-<stack>; ``install.sh``
makes them) with only ``workload.py`` and edgeinfer's ``src`` on PYTHONPATH; edgeinfer runs from
this interpreter. The
stacks alternate over ``--rounds`` rounds (odd rounds in the given order, even rounds reversed) so
the shared machine's noise falls on all of them alike. Server CPU and RSS are summed over the
server's whole process tree (psutil), RSS sampled every second under load. Results and their
reading: docs/BENCHMARKS.md, "Serving: side by side with other stacks".

    python benchmarks/serving/peers/run.py --duration 15 --rounds 2 --out /tmp/peers-out
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
MODEL = "mobilenet_v2"
BATCH = 8
BATCH_WAIT_S = 0.005
CONNECTIONS = (1, 16)
WARMUP_S = 2


@dataclass(frozen=True)
class Stack:
    """How to start one server and what to send it."""

    name: str
    command: Callable[[int, Path], list[str]]  # (port, python) -> argv
    ready_path: str
    request_path: str
    body: str = "jpeg"  # "jpeg": the raw JPEG; "multipart": one form file; "v2": KServe v2 binary
    venv: str | None = None  # None: this interpreter (edgeinfer)
    start_timeout_s: float = 180.0
    env: dict[str, str] = field(default_factory=dict)


def _edgeinfer(instances: int | None, threads: int | None, *extra: str) -> Callable[[int, Path], list[str]]:
    """``edgeinfer serve``; instances/threads None: the default (adaptive) instance shape."""

    def command(port: int, python: Path) -> list[str]:
        shape = [] if instances is None else ["--instances", str(instances), "--threads", str(threads)]
        return [
            str(python), "-m", "edgeinfer.cli.main", "serve", "--model", MODEL, "--runtime", "onnxruntime",
            "--http-port", str(port), "--no-grpc", *shape,
            "--max-batch-size", str(BATCH), "--max-queue-delay-us", str(int(BATCH_WAIT_S * 1e6)),
            "--log-level", "warning", *extra,
        ]  # fmt: skip

    return command


STACKS = {
    # the default shape: one 2-thread runtime, single-thread runs side by side while requests queue
    "edgeinfer": Stack(
        "edgeinfer", _edgeinfer(None, None), "/v2/health/ready", f"/v1/models/{MODEL}/classify"
    ),
    # not in the default set: fixed shapes (the default before the adaptive one; two 1-thread instances)
    "edgeinfer_1x2": Stack(
        "edgeinfer_1x2", _edgeinfer(1, 2), "/v2/health/ready", f"/v1/models/{MODEL}/classify"
    ),
    "edgeinfer_2x1": Stack(
        "edgeinfer_2x1", _edgeinfer(2, 1), "/v2/health/ready", f"/v1/models/{MODEL}/classify"
    ),
    # the default shape with 4 and with 1 image decode threads (the default is the cores: 2)
    "edgeinfer_d4": Stack(
        "edgeinfer_d4",
        _edgeinfer(None, None, "--decode-threads", "4"),
        "/v2/health/ready",
        f"/v1/models/{MODEL}/classify",
    ),
    "edgeinfer_d1": Stack(
        "edgeinfer_d1",
        _edgeinfer(None, None, "--decode-threads", "1"),
        "/v2/health/ready",
        f"/v1/models/{MODEL}/classify",
    ),
    # the default without the lone-client fast path (every request through the decode pool and the queue)
    "edgeinfer_noinline": Stack(
        "edgeinfer_noinline",
        _edgeinfer(None, None, "--no-idle-fast-path"),
        "/v2/health/ready",
        f"/v1/models/{MODEL}/classify",
    ),
    # the default without handing busy split lanes their next batch early
    "edgeinfer_noprefetch": Stack(
        "edgeinfer_noprefetch",
        _edgeinfer(None, None, "--no-prefetch-batches"),
        "/v2/health/ready",
        f"/v1/models/{MODEL}/classify",
    ),
    "fastapi": Stack(
        "fastapi",
        lambda port, py: [
            str(py),
            "-m",
            "uvicorn",
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        "/health",
        "/predict",
        venv="fastapi",
    ),
    "litserve": Stack(
        "litserve",
        lambda port, py: [str(py), "litserve_app.py", str(port)],
        "/health",
        "/predict",
        venv="litserve",
    ),
    "bentoml": Stack(
        "bentoml",
        lambda port, py: [
            str(py),
            "-m",
            "bentoml",
            "serve",
            "bentoml_service:MobileNet",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        "/readyz",
        "/classify",
        body="multipart",
        venv="bentoml",
        env={"BENTOML_DO_NOT_TRACK": "true"},
    ),
    "ray": Stack(
        "ray",
        lambda port, py: [str(py), "ray_app.py", str(port)],
        "/predict",
        "/predict",
        venv="ray",
        env={"RAY_USAGE_STATS_ENABLED": "0"},
    ),
    "pytriton": Stack(
        "pytriton",
        lambda port, py: [str(py), "pytriton_app.py", str(port)],
        f"/v2/models/{MODEL}/ready",
        f"/v2/models/{MODEL}/infer",
        body="v2",
        venv="pytriton",
        # its Triton stub links the system libpython3.11; it must load the venv's own (pyenv) one
        env={"LD_LIBRARY_PATH": str(Path(sys.base_prefix) / "lib")},
    ),
}


# -- inputs ---------------------------------------------------------------------------------------


def make_jpeg(out: Path) -> Path:
    """chelsea (451x300) resized to 337x224 and encoded at quality 90: about 21 KB."""
    import skimage.data
    from PIL import Image

    photo = skimage.data.chelsea()  # type: ignore[no-untyped-call]
    image = Image.fromarray(photo).resize((337, 224), Image.Resampling.LANCZOS)
    path = out / "chelsea_337x224.jpg"
    image.save(path, "JPEG", quality=90)
    return path


def v2_body(jpeg: bytes) -> tuple[bytes, int]:
    """A KServe v2 request with the JPEG as a binary BYTES tensor [1, 1]; (body, JSON header length)."""
    element = len(jpeg).to_bytes(4, "little") + jpeg  # Triton's BYTES layout: 4-byte length + bytes
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "shape": [1, 1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)},
                },
            ],
            "outputs": [{"name": "top5", "parameters": {"binary_data": False}}],
        }
    ).encode()
    return header + element, len(header)


BOUNDARY = "edgeinferpeerbenchboundary"


def request_body(stack: Stack, jpeg: bytes) -> tuple[bytes, dict[str, str]]:
    """What one request of ``stack`` carries: (body, headers)."""
    if stack.body == "v2":
        body, header_len = v2_body(jpeg)
        return body, {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_len),
        }
    if stack.body == "multipart":
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; filename="chelsea.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        body = head + jpeg + f"\r\n--{BOUNDARY}--\r\n".encode()
        return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return jpeg, {"Content-Type": "image/jpeg"}


def lua_script(out: Path, stack: Stack, body: bytes, headers: dict[str, str]) -> Path:
    body_path = out / f"{stack.name}.body"
    body_path.write_bytes(body)
    script = out / f"{stack.name}.lua"
    script.write_text(
        f'wrk.method = "POST"\nlocal f = io.open("{body_path}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        + "".join(f'wrk.headers["{key}"] = "{value}"\n' for key, value in headers.items())
    )
    return script


# -- server process -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss_mb(pid: int) -> float:
    total = 0
    for proc in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


def tree_cpu_s(pid: int, seen: dict[int, float]) -> float:
    """Total CPU seconds of the tree; ``seen`` keeps the last figure of processes that have exited."""
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
            seen[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return sum(seen.values())


class Server:
    def __init__(self, stack: Stack, venvs: Path, log: Path) -> None:
        self.stack = stack
        self.port = free_port()
        python = (
            Path(sys.executable) if stack.venv is None else venvs / f"venv-{stack.venv}" / "bin" / "python"
        )
        if not python.exists():
            raise FileNotFoundError(f"{python} does not exist: install {stack.name} into its venv first")
        env = {**os.environ, **stack.env, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT / "src")])}
        env["PEER_MODEL_DIR"] = str(model_dir())
        env["PEER_THREADS"] = "2"
        self.log = log
        started = time.perf_counter_ns()
        with log.open("wb") as handle:
            self.process = subprocess.Popen(
                stack.command(self.port, python),
                cwd=HERE,
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids: set[int] = set()
        self._wait_ready()
        self.start_s = (time.perf_counter_ns() - started) / 1e9

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.stack.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.stack.name} exited with {self.process.returncode}: see {self.log}")
            try:
                if http("GET", self.url + self.stack.ready_path)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)  # poll interval
        raise TimeoutError(
            f"{self.stack.name} not ready after {self.stack.start_timeout_s} s: see {self.log}"
        )

    def stop(self) -> None:
        self.pids |= {p.pid for p in tree(self.process.pid)}
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for pid in self.pids:  # workers that left the process group (Ray's raylet, ...)
            try:
                proc = psutil.Process(pid)
                proc.wait(5)
            except psutil.NoSuchProcess:
                continue
            except psutil.TimeoutExpired:
                proc.kill()


_MODEL_DIR: list[Path] = []


def model_dir() -> Path:
    if not _MODEL_DIR:
        from edgeinfer.models.repository import ModelRepository

        _MODEL_DIR.append(ModelRepository().get(MODEL, "fp32").directory)
    return _MODEL_DIR[0]


# -- wrk ------------------------------------------------------------------------------------------


def _ms(text: str) -> float:
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"unknown wrk duration {text!r}")


def parse_wrk(text: str) -> dict[str, Any]:
    found: dict[str, Any] = {"non_2xx": 0, "socket_errors": 0}
    for line in text.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "75%", "90%", "99%")):
            found[f"p{parts[0].rstrip('%')}_ms"] = round(_ms(parts[1]), 2)
        elif line.startswith("Requests/sec:"):
            found["req_per_s"] = float(parts[1])
        elif "Non-2xx" in line:
            found["non_2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors:"):
            found["socket_errors"] = sum(int(p.rstrip(",")) for p in parts[2::2])
        elif "requests in" in line:
            found["requests"] = int(parts[0])
    return found


def wrk(url: str, script: Path, connections: int, duration_s: float) -> dict[str, Any]:
    command = [
        "wrk",
        "-t",
        str(min(2, connections)),
        "-c",
        str(connections),
        "-d",
        f"{duration_s:g}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_wrk(text)


def measure(server: Server, script: Path, duration_s: float) -> dict[str, Any]:
    url = server.url + server.stack.request_path
    pid = server.process.pid
    result: dict[str, Any] = {"start_s": round(server.start_s, 2), "idle_rss_mb": round(tree_rss_mb(pid), 1)}
    wrk(url, script, 4, WARMUP_S)  # unrecorded: first connections, lazy imports, allocator growth
    seen: dict[int, float] = {}
    for connections in CONNECTIONS:
        peak = [0.0]
        done = threading.Event()

        def sample(peak: list[float] = peak, done: threading.Event = done) -> None:
            while not done.wait(1.0):
                peak[0] = max(peak[0], tree_rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        cpu_before, load_before = tree_cpu_s(pid, seen), os.getloadavg()[0]
        started = time.perf_counter_ns()
        sampler.start()
        cell = wrk(url, script, connections, duration_s)
        done.set()
        sampler.join()
        wall_s = (time.perf_counter_ns() - started) / 1e9
        cell["server_cpu_pct"] = round(100 * (tree_cpu_s(pid, seen) - cpu_before) / wall_s, 1)
        cell["server_rss_peak_mb"] = round(peak[0], 1)
        cell["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        result[f"c{connections}"] = cell
    return result


def check_answer(server: Server, body: bytes, headers: dict[str, str]) -> str:
    """One request before measuring: the stack must answer 200 with Egyptian cat on top."""
    status, data = http("POST", server.url + server.stack.request_path, body, headers)
    text = data.decode(errors="replace")
    if status != 200 or "Egyptian cat" not in text:
        raise RuntimeError(f"{server.stack.name} answered {status}: {text[:300]}")
    return text[:200]


# -- main -----------------------------------------------------------------------------------------


def versions(venvs: Path) -> dict[str, str]:
    packages = {
        "fastapi": ("fastapi", "uvicorn"),
        "litserve": ("litserve",),
        "bentoml": ("bentoml",),
        "ray": ("ray",),
        "pytriton": ("nvidia-pytriton",),
    }
    found = {}
    for venv, names in packages.items():
        python = venvs / f"venv-{venv}" / "bin" / "python"
        if not python.exists():
            continue
        for name in names:
            code = f"import importlib.metadata as m; print(m.version({name!r}))"
            out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
            found[name] = out.stdout.strip() or "not installed"
    import onnxruntime

    import edgeinfer

    found["onnxruntime"] = onnxruntime.__version__
    found["edgeinfer"] = getattr(edgeinfer, "__version__", "?")
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    def span(values: list[float], fmt: str = "{:.0f}") -> str:
        if not values:
            return "-"
        low, high = fmt.format(min(values)), fmt.format(max(values))
        return low if low == high else f"{low}–{high}"

    def cpu_ms(cell: dict[str, Any]) -> float:
        """Server CPU time per answered request: less sensitive to other jobs than req/s."""
        return float(cell["server_cpu_pct"]) * 10 / max(float(cell["req_per_s"]), 1e-9)

    rows = [
        "| stack | start s | idle RSS MB | 1 client: req/s | p50 ms | p99 ms | CPU ms/req "
        "| 16 clients: req/s | p50 ms | p99 ms | CPU % | CPU ms/req | peak RSS MB | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        if not ok:
            rows.append(f"| {name} | " + " | ".join(["-"] * 12) + f" | {runs[0].get('error', '')[:60]} |")
            continue
        c1, c16 = [r["c1"] for r in ok], [r["c16"] for r in ok]
        cells = [
            span([r["start_s"] for r in ok], "{:.1f}"),
            span([r["idle_rss_mb"] for r in ok]),
            span([c["req_per_s"] for c in c1], "{:.1f}"),
            span([c["p50_ms"] for c in c1], "{:.1f}"),
            span([c["p99_ms"] for c in c1], "{:.1f}"),
            span([cpu_ms(c) for c in c1], "{:.1f}"),
            span([c["req_per_s"] for c in c16], "{:.1f}"),
            span([c["p50_ms"] for c in c16]),
            span([c["p99_ms"] for c in c16]),
            span([c["server_cpu_pct"] for c in c16]),
            span([cpu_ms(c) for c in c16], "{:.1f}"),
            span([c["server_rss_peak_mb"] for c in c16]),
            str(sum(c["non_2xx"] + c["socket_errors"] for c in c1 + c16)),
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    variants = (
        "edgeinfer_1x2",
        "edgeinfer_2x1",
        "edgeinfer_d4",
        "edgeinfer_d1",
        "edgeinfer_noinline",
        "edgeinfer_noprefetch",
    )
    default_stacks = ",".join(name for name in STACKS if name not in variants)
    parser.add_argument("--stacks", default=default_stacks, help="comma-separated, in round-1 order")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per wrk cell")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--venvs", type=Path, default=Path("/tmp/peers"), help="folder of venv-<stack>")
    parser.add_argument("--out", type=Path, default=Path("/tmp/peers-out"))
    parser.add_argument("--table", type=Path, help="only print the table of a saved summary.json")
    args = parser.parse_args()
    if args.table:
        saved = json.loads(args.table.read_text())
        grouped: dict[str, list[dict[str, Any]]] = {}
        for saved_run in saved["runs"]:
            grouped.setdefault(saved_run["stack"], []).append(saved_run)
        print(table(grouped))
        return
    names = [n.strip() for n in args.stacks.split(",") if n.strip()]
    unknown = [n for n in names if n not in STACKS]
    if unknown:
        parser.error(f"unknown stack(s) {unknown}; choose from {', '.join(STACKS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    jpeg = make_jpeg(args.out)
    summary: dict[str, Any] = {
        "machine": machine(),
        "versions": versions(args.venvs),
        "settings": {
            "image": f"{jpeg.name}, {jpeg.stat().st_size} bytes",
            "duration_s": args.duration,
            "connections": list(CONNECTIONS),
            "wrk_threads": 2,
            "warmup_s": WARMUP_S,
            "max_batch": BATCH,
            "batch_wait_s": BATCH_WAIT_S,
            "ort_intra_op_threads": 2,
            "ort_spinning": False,
            "rounds": args.rounds,
            "model_dir": str(model_dir()),
        },
        "runs": [],
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            stack = STACKS[name]
            body, headers = request_body(stack, jpeg.read_bytes())
            script = lua_script(args.out, stack, body, headers)
            record: dict[str, Any] = {"stack": name, "round": round_index + 1}
            server = None
            try:
                server = Server(stack, args.venvs, args.out / f"{name}-r{round_index + 1}.log")
                record["answer"] = check_answer(server, body, headers)
                record.update(measure(server, script, args.duration))
            except (OSError, RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                if server is not None:
                    server.stop()
            results[name].append(record)
            summary["runs"].append(record)
            print(json.dumps(record), flush=True)
            (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    summary["table"] = table(results)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("machine", "versions", "settings")}, indent=2))
    print(summary["table"])


if __name__ == "__main__":
    main()
