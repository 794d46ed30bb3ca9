"""edgeinfer tune: a tiny real search, the file it writes, and runtime="auto" following it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgeinfer.cli.main import main
from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput
from edgeinfer.models.repository import ModelRepository
from edgeinfer.system.machine import machine_key
from edgeinfer.tune import TuneSpace, search, tuned_choice, tuned_threads, tuning_path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A repository of its own: tuning changes what runtime="auto" picks, so keep it from other tests."""
    own = ModelRepository(tmp_path_factory.mktemp("tune-home"))
    own.build("mobilenet_v2")
    return own


def _space(runtime: str) -> TuneSpace:
    return TuneSpace(
        runtimes=(runtime,),
        precisions=("fp32",),
        threads=(1,),
        batch_sizes=(1, 2),
        duration_s=0.1,
        warmup_runs=1,
        min_runs=3,
    )


def test_search_writes_both_winners_for_this_machine(repo: ModelRepository) -> None:
    result, path = search(repo, "mobilenet_v2", _space("onnxruntime"))
    assert path == tuning_path(repo.root, "mobilenet_v2")
    assert [(t.batch_size, t.ok) for t in result.trials] == [(1, True), (2, True)]
    for trial in result.trials:
        assert trial.runs >= 3
        assert trial.p50_ms is not None and trial.p90_ms is not None and trial.p99_ms is not None
        assert 0 < trial.p50_ms <= trial.p90_ms <= trial.p99_ms
        assert trial.images_per_s is not None and trial.images_per_s > 0
    latency = result.best["latency"]
    assert latency is not None and latency.batch_size == 1
    throughput = result.best["throughput"]
    assert throughput is not None
    assert throughput.images_per_s == max(t.images_per_s or 0 for t in result.trials)
    stored = json.loads(path.read_text())
    entry = stored["machines"][machine_key()]
    assert entry["best_by_precision"]["fp32"]["latency"]["runtime"] == "onnxruntime"
    assert entry["space"]["batch_sizes"] == [1, 2]


def test_auto_follows_the_tuned_runtime(repo: ModelRepository) -> None:
    chosen = ["onnxruntime"]
    if importlib.util.find_spec("openvino") is not None:
        chosen.append("openvino")
    for runtime in chosen:  # tune with one runtime at a time: auto must follow each result
        search(repo, "mobilenet_v2", _space(runtime))
        assert tuned_choice(repo.root, "mobilenet_v2", "fp32") == runtime
        with Engine.load("mobilenet_v2", runtime="auto", threads=1, repository=repo) as engine:
            assert engine.runtime.name == runtime


def test_auto_takes_the_tuned_thread_count_unless_threads_are_given(
    repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.system import threads
    from edgeinfer.system.threads import ThreadBudget

    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))  # 2 free: None would take both
    search(repo, "mobilenet_v2", _space("onnxruntime"))  # the space times 1 thread only
    assert tuned_threads(repo.root, "mobilenet_v2", "fp32") == 1
    with Engine.load("mobilenet_v2", runtime="auto", repository=repo) as engine:
        assert (engine.runtime.name, engine.runtime.threads) == ("onnxruntime", 1)
    with Engine.load("mobilenet_v2", runtime="auto", threads=2, repository=repo) as engine:
        assert engine.runtime.threads == 2
    with Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo) as engine:
        assert engine.runtime.threads == 2  # a named runtime is not the tuned configuration


def test_no_tuning_means_no_choice(repo: ModelRepository, tmp_path: Path) -> None:
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32") is None
    assert tuned_choice(repo.root, "mobilenet_v2", "bf16") is None  # precision not searched
    broken = tuning_path(tmp_path, "mobilenet_v2")
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32") is None
    assert tuned_threads(tmp_path, "mobilenet_v2", "fp32") is None
    with pytest.raises(ValueError, match="goal"):
        tuned_choice(repo.root, "mobilenet_v2", "fp32", goal="cheapest")


def test_bad_space_is_refused() -> None:
    with pytest.raises(InvalidInput, match="batch"):
        TuneSpace(runtimes=("onnxruntime",), batch_sizes=(0,))
    with pytest.raises(InvalidInput, match="runtimes"):
        TuneSpace(runtimes=())


def test_cli_tune_prints_json_and_rejects_bad_numbers(
    repo: ModelRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", "mobilenet_v2", "-r", "ort", "-p", "fp32", "--threads", "1", "--batch", "1"]
    code = main([*args, "--duration", "0.05", "--home", str(repo.root), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["best"]["latency"]["runtime"] == "onnxruntime"
    assert Path(payload["path"]).is_file()
    assert main([*args[:-1], "one", "--home", str(repo.root)]) == InvalidInput.exit_code
    assert "--batch takes comma-separated whole numbers" in capsys.readouterr().err


def test_search_measures_litert_on_the_fp32_builds_tflite_twin(repo: ModelRepository) -> None:
    pytest.importorskip("ai_edge_litert")
    result, _ = search(repo, "mobilenet_v2", _space("litert"), save=False)
    trials = [(t.runtime, t.batch_size, t.ok) for t in result.trials]
    assert trials == [("litert", 1, True), ("litert", 2, True)]


def test_batch1_figures_skip_failed_and_malformed_trials(tmp_path: Path) -> None:
    from edgeinfer.tune.store import tuned_batch1_ms, write_entry

    good = {"runtime": "onnxruntime", "precision": "fp32", "threads": 2, "batch_size": 1, "p50_ms": 5.0}
    trials = [
        good,
        {**good, "p50_ms": 4.0, "error": "crashed"},  # failed: not a figure
        {**good, "p50_ms": "fast"},  # malformed
        {**good, "runtime": "no-such-runtime", "p50_ms": 1.0},  # not installed
        {**good, "precision": "int8", "p50_ms": 2.0},  # another precision
        "not a trial",
    ]
    write_entry(tmp_path, "mobilenet_v2", machine_key(), {"trials": trials})
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", threads=2) == {"onnxruntime": 5.0}
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", threads=1) == {"onnxruntime": 5.0}  # none at 1
    write_entry(tmp_path, "mobilenet_v2", machine_key(), {"trials": "garbage"})
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32") == {}
    assert tuned_batch1_ms(tmp_path / "never-tuned", "mobilenet_v2", "fp32") == {}
