"""edgeinfer tune: a tiny real search, the file it writes, and runtime="auto" following it."""

from __future__ import annotations

import errno
import importlib.util
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

from edgeinfer.cli.main import main
from edgeinfer.engine import Engine
from edgeinfer.errors import InvalidInput, StorageError
from edgeinfer.models.repository import ModelRepository
from edgeinfer.system.machine import machine_key
from edgeinfer.tune import TuneSpace, search, tuned_choice, tuned_entry, tuned_threads, tuning_path
from edgeinfer.tune.store import TUNING_SCHEMA_VERSION, tuned_batch1_ms, write_entry


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> ModelRepository:
    """A repository of its own: tuning changes what runtime="auto" picks, so keep it from other tests."""
    own = ModelRepository(tmp_path_factory.mktemp("tune-home"))
    own.build("mobilenet_v2")
    return own


def _space(*runtimes: str) -> TuneSpace:
    return TuneSpace(
        runtimes=runtimes,
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
    assert entry["file_sha256"] == {"fp32": _sha(repo)}  # the build the figures belong to


def test_auto_follows_the_tuned_runtime(repo: ModelRepository) -> None:
    chosen = ["onnxruntime"]
    if importlib.util.find_spec("openvino") is not None:
        chosen.append("openvino")
    for blob in (repo.root / "compiled").glob("*/*.blob"):  # earlier tests' loads
        blob.unlink()
    for runtime in chosen:  # tune with one runtime at a time: auto must follow each result
        search(repo, "mobilenet_v2", _space(runtime))
        assert tuned_choice(repo.root, "mobilenet_v2", "fp32", file_sha256=_sha(repo)) == runtime
        with Engine.load("mobilenet_v2", runtime="auto", threads=1, repository=repo) as engine:
            assert engine.runtime.name == runtime
            if runtime == "openvino":  # the search compiled it: the engine imports what it kept
                assert engine.runtime.properties["LOADED_FROM_CACHE"] == "True"  # type: ignore[attr-defined]


def test_auto_takes_the_tuned_thread_count_unless_threads_are_given(
    repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.system import threads
    from edgeinfer.system.threads import ThreadBudget

    monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))  # 2 free: None would take both
    search(repo, "mobilenet_v2", _space("onnxruntime"))  # the space times 1 thread only
    assert tuned_threads(repo.root, "mobilenet_v2", "fp32", file_sha256=_sha(repo)) == 1
    with Engine.load("mobilenet_v2", runtime="auto", repository=repo) as engine:
        assert (engine.runtime.name, engine.runtime.threads) == ("onnxruntime", 1)
    with Engine.load("mobilenet_v2", runtime="auto", threads=2, repository=repo) as engine:
        assert engine.runtime.threads == 2
    with Engine.load("mobilenet_v2", runtime="onnxruntime", repository=repo) as engine:
        assert engine.runtime.threads == 2  # a named runtime is not the tuned configuration


def test_no_tuning_means_no_choice(repo: ModelRepository, tmp_path: Path) -> None:
    sha = _sha(repo)
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256=sha) is None
    assert tuned_choice(repo.root, "mobilenet_v2", "bf16", file_sha256=sha) is None  # not searched
    broken = tuning_path(tmp_path, "mobilenet_v2")
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256=sha) is None
    assert tuned_threads(tmp_path, "mobilenet_v2", "fp32", file_sha256=sha) is None
    with pytest.raises(ValueError, match="goal"):
        tuned_choice(repo.root, "mobilenet_v2", "fp32", goal="cheapest", file_sha256=sha)


def test_bad_space_is_refused() -> None:
    with pytest.raises(InvalidInput, match="batch"):
        TuneSpace(runtimes=("onnxruntime",), batch_sizes=(0,))
    with pytest.raises(InvalidInput, match="runtimes"):
        TuneSpace(runtimes=())
    with pytest.raises(InvalidInput, match="unknown precision 'foo'; choose from fp32, fp16, int8"):
        TuneSpace(runtimes=("onnxruntime",), precisions=("fp32", "foo"))
    for field in ("duration_s", "p99_bound_ms"):
        for value in (math.nan, math.inf):
            with pytest.raises(InvalidInput, match="must be a finite positive number"):
                TuneSpace(runtimes=("onnxruntime",), **{field: value})
    with pytest.raises(InvalidInput, match="tune times named runtimes") as refused:
        TuneSpace(runtimes=("auto",))
    assert "auto," not in str(refused.value) and "null" in str(refused.value)  # the choices, not auto


def test_cli_refuses_bad_options_before_measuring(
    repo: ModelRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", "mobilenet_v2", "-r", "ort", "--threads", "1", "--batch", "1", "--home", str(repo.root)]
    for bad, message in [
        (["--duration", "nan"], "must be a finite positive number"),
        (["--duration", "inf"], "must be a finite positive number"),
        (["--p99-bound-ms", "nan"], "must be a finite positive number"),
        (["-p", "fp32,foo"], "unknown precision 'foo'"),
        (["-r", "auto"], "tune times named runtimes"),
        (["--batch", "2,4"], "--batch 2,4: include 1, at which the latency goal"),
        (["--duration", "1e300"], "must be at most 3600 s"),
    ]:
        assert main([*args, "-p", "fp32", "--duration", "0.05", *bad]) == InvalidInput.exit_code, bad
        err = capsys.readouterr().err
        assert err.startswith("edgeinfer: error: ") and message in err and err.count("\n") == 1, err


def _sha(repo: ModelRepository) -> str:
    return repo.get("mobilenet_v2", "fp32").config.file_sha256


def _store(
    root: Path, sha: str, *, runtime: str = "onnxruntime", threads: int = 1, precision: str = "fp32"
) -> None:
    """Store a tuning result with one winning trial, as ``search`` would."""
    trial = {
        "runtime": runtime, "precision": precision, "threads": threads, "batch_size": 1, "runs": 5,
        "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 7.0, "images_per_s": 200.0, "error": None,
    }  # fmt: skip
    winners = {precision: {"latency": trial, "throughput": trial}}
    result = {"trials": [trial], "best_by_precision": winners, "file_sha256": {precision: sha}}
    write_entry(root, "mobilenet_v2", machine_key(), result)


def test_null_is_timed_but_never_a_winner(repo: ModelRepository, tmp_path: Path) -> None:
    result, _ = search(repo, "mobilenet_v2", _space("null", "onnxruntime"), save=False)
    assert {t.runtime for t in result.trials if t.ok} == {"null", "onnxruntime"}  # null is far quicker
    for goals in (result.best, result.best_by_precision["fp32"]):
        assert [t.runtime if t else None for t in goals.values()] == ["onnxruntime", "onnxruntime"]
    for runtime in ("null", "keras"):  # stored by an earlier version: auto must not open it
        _store(tmp_path, "sha", runtime=runtime)
        assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") is None
    _store(tmp_path, "sha")
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") == "onnxruntime"


def test_cli_says_why_keras_is_skipped_and_stores_no_null_winner(
    repo: ModelRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", "mobilenet_v2", "-p", "fp32", "--threads", "1", "--batch", "1", "--duration", "0.05"]
    args += ["--home", str(repo.root)]
    assert main([*args, "-r", "keras,ort"]) == 0
    err = capsys.readouterr().err
    assert "edgeinfer: skipping keras: it runs torch models, not mobilenet_v2's onnx build" in err
    stored = tuning_path(repo.root, "mobilenet_v2").read_text()
    assert main([*args, "-r", "null"]) == 1  # timed, but no winner: nothing stored
    assert "gave a winner (null and keras never do); nothing stored" in capsys.readouterr().err
    assert tuning_path(repo.root, "mobilenet_v2").read_text() == stored
    assert tuned_choice(repo.root, "mobilenet_v2", "fp32", file_sha256=_sha(repo)) == "onnxruntime"


def test_a_piped_runs_table_is_not_truncated(
    repo: ModelRepository, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of a terminal (``edgeinfer tune | cat``, a log file) rich's 80 columns cut the runtime."""
    monkeypatch.delenv("COLUMNS", raising=False)  # rich would take the width from it
    args = ["tune", "mobilenet_v2", "-r", "ort", "-p", "fp32", "--threads", "1", "--batch", "1"]
    assert main([*args, "--duration", "0.05", "--home", str(repo.root)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "latency" in line]
    assert rows and all("onnxruntime" in row for row in rows), out
    assert "…" not in out and "images/s" in out


def test_each_run_replaces_only_the_precisions_it_found_winners_for(tmp_path: Path) -> None:
    def threads(precision: str) -> int | None:
        return tuned_threads(tmp_path, "mobilenet_v2", precision, file_sha256=f"{precision}-sha")

    _store(tmp_path, "fp32-sha", threads=1)
    _store(tmp_path, "int8-sha", threads=2, precision="int8")  # a later run of int8 only
    assert (threads("fp32"), threads("int8")) == (1, 2)
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", file_sha256="fp32-sha") == {"onnxruntime": 5.0}
    failed = {
        "runtime": "onnxruntime",
        "precision": "fp32",
        "threads": 2,
        "batch_size": 1,
        "error": "crashed",
    }
    nothing = {"trials": [failed], "best_by_precision": {"fp32": {"latency": None, "throughput": None}}}
    write_entry(tmp_path, "mobilenet_v2", machine_key(), {**nothing, "file_sha256": {"fp32": "fp32-sha"}})
    assert (threads("fp32"), threads("int8")) == (1, 2)  # every fp32 trial failed: the good one stays
    _store(tmp_path, "fp32-sha", threads=2)
    assert (threads("fp32"), threads("int8")) == (2, 2)
    entry = tuned_entry(tmp_path, "mobilenet_v2")
    assert entry is not None
    assert sorted((t["precision"], t["threads"]) for t in entry["trials"]) == [("fp32", 2), ("int8", 2)]


def test_a_tuning_of_another_build_is_not_followed(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeinfer.runtimes import registry

    search(repo, "mobilenet_v2", _space("onnxruntime"))
    sha, other = _sha(repo), "0" * 64
    assert tuned_choice(repo.root, "mobilenet_v2", "fp32", file_sha256=sha) == "onnxruntime"
    assert tuned_choice(repo.root, "mobilenet_v2", "fp32", file_sha256=other) is None
    assert tuned_threads(repo.root, "mobilenet_v2", "fp32", file_sha256=other) is None
    assert tuned_batch1_ms(repo.root, "mobilenet_v2", "fp32", file_sha256=other) == {}
    entry = tuned_entry(repo.root, "mobilenet_v2")
    assert entry is not None
    del entry["file_sha256"]  # a file from before the sha256 was stored: probe again
    document = {"schema_version": TUNING_SCHEMA_VERSION, "machines": {machine_key(): entry}}
    tuning_path(tmp_path, "mobilenet_v2").parent.mkdir()
    tuning_path(tmp_path, "mobilenet_v2").write_text(json.dumps(document))
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256=sha) is None

    probed: list[Any] = []

    def probe(*args: object, **kwargs: Any) -> registry.AutoChoice:
        probed.append(kwargs["model_sha256"])
        return registry.AutoChoice(runtime="onnxruntime", results=(), cached=False, key="probe")

    monkeypatch.setattr(registry, "choose_auto", probe)
    assert Engine.choose_runtime("mobilenet_v2", repository=repo) == "onnxruntime"
    assert probed == []  # tuned on this build: followed
    _store(repo.root, other)  # tuned on a build since replaced (rebuilt, or removed and built again)
    assert Engine.choose_runtime("mobilenet_v2", repository=repo) == "onnxruntime"
    assert probed == [sha]  # probed again


def test_an_unwritable_repository_is_refused_before_measuring(
    repo: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edgeinfer.tune import store

    copy = ModelRepository(tmp_path / "home")
    shutil.copytree(repo.models_dir, copy.models_dir)
    (copy.root / "tuning").write_text("a file where the folder goes")  # refused even to root
    measured: list[object] = []
    with pytest.raises(StorageError, match="cannot write tuning results to"):
        search(copy, "mobilenet_v2", _space("onnxruntime"), measured.append)
    assert measured == []
    args = ["tune", "mobilenet_v2", "-r", "ort", "-p", "fp32", "--threads", "1", "--batch", "1"]
    assert main([*args, "--home", str(copy.root)]) == StorageError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("edgeinfer: error: cannot write tuning results") and err.count("\n") == 1

    (copy.root / "tuning").unlink()

    def read_only(path: Path, data: object) -> None:  # the disk turns read-only while measuring
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store, "write_atomically", read_only)
    with pytest.raises(StorageError, match="Read-only file system"):
        search(copy, "mobilenet_v2", _space("onnxruntime"))


def test_cli_tune_prints_json_and_rejects_bad_numbers(
    repo: ModelRepository, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["tune", "mobilenet_v2", "-r", "ort", "-p", "fp32", "--threads", "1", "--batch", "1"]
    # bench's spellings work here too, and a repeated value is timed once
    again = ["-r", "ONNX,ort", "-p", "FP32,fp32", "--threads", "1,1", "--batch", "1,1"]
    code = main([*args, *again, "--duration", "0.05", "--home", str(repo.root), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["best"]["latency"]["runtime"] == "onnxruntime"
    assert [(t["runtime"], t["precision"], t["batch_size"]) for t in payload["trials"]] == [
        ("onnxruntime", "fp32", 1)
    ]
    assert Path(payload["path"]).is_file()
    assert main([*args[:-1], "one", "--home", str(repo.root)]) == InvalidInput.exit_code
    assert "--batch takes comma-separated whole numbers" in capsys.readouterr().err


def test_search_measures_litert_on_the_fp32_builds_tflite_twin(repo: ModelRepository) -> None:
    pytest.importorskip("ai_edge_litert")
    result, _ = search(repo, "mobilenet_v2", _space("litert"), save=False)
    trials = [(t.runtime, t.batch_size, t.ok) for t in result.trials]
    assert trials == [("litert", 1, True), ("litert", 2, True)]


def test_batch1_figures_skip_failed_and_malformed_trials(tmp_path: Path) -> None:
    good = {"runtime": "onnxruntime", "precision": "fp32", "threads": 2, "batch_size": 1, "p50_ms": 5.0}
    trials = [
        good,
        {**good, "p50_ms": 4.0, "error": "crashed"},  # failed: not a figure
        {**good, "p50_ms": "fast"},  # malformed
        {**good, "runtime": "no-such-runtime", "p50_ms": 1.0},  # not installed
        {**good, "precision": "int8", "p50_ms": 2.0},  # another precision
        "not a trial",
    ]

    def tuned(trials: object) -> None:  # written as is: the reader must cope with damaged files
        entry = {"trials": trials, "file_sha256": {"fp32": "sha"}}
        document = {"schema_version": TUNING_SCHEMA_VERSION, "machines": {machine_key(): entry}}
        tuning_path(tmp_path, "mobilenet_v2").parent.mkdir(exist_ok=True)
        tuning_path(tmp_path, "mobilenet_v2").write_text(json.dumps(document))

    tuned(trials)
    figures = {"onnxruntime": 5.0}
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", threads=2, file_sha256="sha") == figures
    assert (
        tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", threads=1, file_sha256="sha") == figures
    )  # none at 1
    tuned("garbage")
    assert tuned_batch1_ms(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") == {}
    assert tuned_batch1_ms(tmp_path / "never-tuned", "mobilenet_v2", "fp32", file_sha256="sha") == {}


def test_bf16_is_searched_on_openvino_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """And ``auto`` takes the thread count tune timed for it (a repository of its own: it saves)."""
    pytest.importorskip("openvino")
    from edgeinfer.system import threads
    from edgeinfer.system.machine import isa_flags
    from edgeinfer.system.threads import ThreadBudget

    space = TuneSpace(
        runtimes=("onnxruntime", "openvino"),
        precisions=("bf16",),
        threads=(1,),
        batch_sizes=(1,),
        duration_s=0.1,
        warmup_runs=1,
        min_runs=3,
    )
    repo = ModelRepository(tmp_path)
    result, _ = search(repo, "mobilenet_v2", space)
    if {"AVX512_BF16", "AMX_BF16"} & set(isa_flags()):
        assert [(t.runtime, t.precision, t.error, t.skipped) for t in result.trials] == [
            ("onnxruntime", "bf16", "bf16 is computed by openvino only", True),  # said, not dropped
            ("openvino", "bf16", None, False),
        ]
        assert result.best_by_precision["bf16"]["latency"].runtime == "openvino"
        monkeypatch.setattr(threads, "_budget", ThreadBudget(total=2))  # 2 free: None would take both
        with Engine.load("mobilenet_v2", precision="bf16", repository=repo) as engine:
            assert (engine.runtime.name, engine.runtime.threads) == ("openvino", 1)  # the timed count
        with Engine.load("mobilenet_v2", precision="bf16", threads=2, repository=repo) as engine:
            assert engine.runtime.threads == 2
    else:  # one failed trial that says why, nothing measured
        (trial,) = result.trials
        assert trial.error is not None and "no bf16 arithmetic" in trial.error


def _write_many(root: str, tag: str) -> None:
    for i in range(40):
        write_entry(Path(root), "mobilenet_v2", f"{tag}-{i}", {"trials": [], "best_by_precision": {}})


def test_tunings_written_at_the_same_time_keep_every_entry(tmp_path: Path) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_many, args=(str(tmp_path), tag)) for tag in "AB"]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    stored = json.loads(tuning_path(tmp_path, "mobilenet_v2").read_text())["machines"]
    assert len(stored) == 80  # each read-merge-write holds the file's lock (about a third were lost)


def test_a_hand_written_alias_is_followed_and_an_unknown_runtime_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _store(tmp_path, "sha", runtime="ort")  # what every command accepts
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") == "onnxruntime"
    _store(tmp_path, "sha", runtime="tensorrt")
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") is None
    assert "ignoring tensorrt in the tuning file" in caplog.text
    tuning_path(tmp_path, "mobilenet_v2").write_text("{not json")
    assert tuned_choice(tmp_path, "mobilenet_v2", "fp32", file_sha256="sha") is None
    assert "it cannot be read" in caplog.text  # was ignored without a word


def test_the_threads_a_trial_records_are_the_ones_it_ran_with(repo: ModelRepository) -> None:
    from dataclasses import replace

    from edgeinfer.system.threads import usable_cores

    space = replace(_space("onnxruntime"), threads=(99,), batch_sizes=(1,))
    result, _ = search(repo, "mobilenet_v2", space, save=False)
    assert [t.threads for t in result.trials] == [usable_cores()]  # 99 was recorded, 2 ran


def test_thread_counts_past_the_cores_are_timed_once(
    repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, ``--threads 2,3`` on 2 cores timed two trials both labelled threads=2."""
    from dataclasses import replace

    from edgeinfer.system import threads

    monkeypatch.setattr(threads, "_budget", threads.ThreadBudget(total=2))
    space = replace(_space("null"), threads=(1, 2, 3, 8), batch_sizes=(1,))
    result, _ = search(repo, "mobilenet_v2", space, save=False)
    assert sorted(t.threads for t in result.trials if t.ok) == [1, 2]


def test_bf16_stays_on_openvino_whatever_runtime_is_preferred(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server prefers a runtime close to the pick for its split lanes; before, after an fp32
    and a bf16 tuning, that preference moved bf16 to ONNX Runtime and `serve --precision bf16`
    could not start."""
    from edgeinfer.system import machine

    monkeypatch.setattr(machine, "this_cpu_flags", lambda: frozenset({"AVX512F", "AMX_BF16", "AVX512_BF16"}))
    repo = ModelRepository(tmp_path)
    sha = repo.build("mobilenet_v2").config.file_sha256
    trials = [
        {"runtime": runtime, "precision": "fp32", "threads": 1, "batch_size": 1, "runs": 5, "p50_ms": p50,
         "p90_ms": p50 + 1, "p99_ms": p50 + 2, "images_per_s": 1000 / p50, "error": None}
        for runtime, p50 in (("onnxruntime", 4.5), ("openvino", 3.6))
    ]  # fmt: skip
    winners = {"fp32": {"latency": trials[1], "throughput": trials[1]}}
    fp32 = {"trials": trials, "best_by_precision": winners, "file_sha256": {"fp32": sha}}
    write_entry(repo.root, "mobilenet_v2", machine_key(), fp32)  # ONNX Runtime within 1.25x
    _store(repo.root, sha, runtime="openvino", precision="bf16")
    chosen = Engine.choose_runtime(
        "mobilenet_v2", precision="bf16", prefer=("onnxruntime",), prefer_within=100.0, repository=repo
    )
    assert chosen == "openvino"
