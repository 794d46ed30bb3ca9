"""INT8 recipes: the named choices, and stored builds that an older recipe made."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from edgeinfer.cli.main import main
from edgeinfer.errors import InvalidInput
from edgeinfer.models import recipes
from edgeinfer.models.config import ModelConfig
from edgeinfer.models.quantize import BuildSettings
from edgeinfer.models.recipes import (
    INT8_RECIPES,
    Int8Recipe,
    for_this_cpu,
    named_recipe,
    outdated,
    recipe_name,
    stored_recipe_name,
)
from edgeinfer.models.repository import CONFIG_FILE, ModelRepository


def test_named_recipes() -> None:
    assert named_recipe("fast") == for_this_cpu(Int8Recipe())
    accurate = named_recipe("accurate")
    assert (
        accurate.last_stream_in_float and accurate.exclude_first_conv and accurate.empirical_bias_correction
    )
    assert recipe_name(accurate) == "accurate" and recipe_name(Int8Recipe(seed=3)) == "custom"
    with pytest.raises(InvalidInput, match="unknown INT8 recipe 'exact'; choose one of fast, accurate"):
        named_recipe("exact")
    from edgeinfer.cli.models import register  # the CLI offers exactly these names

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    choices = next(a.choices for a in _build_parser(parser)._actions if a.dest == "recipe")
    assert tuple(choices) == tuple(INT8_RECIPES)


def _build_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    models = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["models"]
    return next(a for a in models._actions if isinstance(a, argparse._SubParsersAction)).choices["build"]


@pytest.mark.parametrize("saturates", [True, False])
def test_named_recipes_use_7_bit_weights_where_int8_products_saturate(
    monkeypatch: pytest.MonkeyPatch, repo: ModelRepository, saturates: bool
) -> None:
    """On x86 without VNNI the named recipes (and the default build) quantize weights to 7 bits; a
    build from a CPU of the other kind is outdated here, since its weights suit the other CPU."""
    monkeypatch.setattr(recipes, "int8_products_saturate", lambda: saturates)
    for name in INT8_RECIPES:
        assert named_recipe(name).reduce_range is saturates
        assert recipe_name(named_recipe(name)) == name
    assert BuildSettings().recipe == named_recipe("fast")
    assert for_this_cpu(Int8Recipe(reduce_range=True)).reduce_range  # asked for: kept everywhere
    fp32 = repo.get("mobilenet_v2").config
    here = _as_int8(fp32, {"recipe": asdict(named_recipe("fast")), "recipe_name": "fast"})
    other_cpu = {**asdict(named_recipe("fast")), "reduce_range": not saturates}
    assert outdated(here) is None
    reason = outdated(_as_int8(fp32, {"recipe": other_cpu, "recipe_name": "fast"}))
    assert reason is not None and ("saturate" if saturates else "takes 8-bit weights") in reason


def _as_int8(config: ModelConfig, quality: dict[str, object]) -> ModelConfig:
    return replace(config, precision="int8", extra={"quality": quality})


def test_which_stored_builds_are_outdated(repo: ModelRepository) -> None:
    fp32 = repo.get("mobilenet_v2").config
    fast = asdict(named_recipe("fast"))
    assert outdated(fp32) is None  # only INT8 builds have recipes
    assert outdated(_as_int8(fp32, {"recipe": fast, "recipe_name": "fast"})) is None
    older = {**fast, "held_out_variants": 16}  # what "fast" was before the gate's larger held-out set
    reason = outdated(_as_int8(fp32, {"recipe": older, "recipe_name": "fast"}))
    assert reason == "built with an older version of the 'fast' INT8 recipe"
    # builds from before recipes were recorded were made by the default recipe of their day
    legacy = _as_int8(fp32, {"top1_agreement": 1.0})
    assert stored_recipe_name(legacy) == "fast" and outdated(legacy) is not None
    # a custom recipe is the user's own choice: never rebuilt behind their back
    assert outdated(_as_int8(fp32, {"recipe": {**fast, "seed": 3}, "recipe_name": "custom"})) is None


def test_an_outdated_int8_build_is_used_with_a_warning_and_rebuilt_by_models_build(
    repo: ModelRepository,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    photos: dict[str, Path],
) -> None:
    """A build an older edgeinfer made (here: the "fast" recipe with 16 held-out variants) keeps
    serving as it is, with a warning, until `edgeinfer models build` rebuilds it."""
    local = ModelRepository(tmp_path)
    for precision in ("fp32", "int8"):
        shutil.copytree(
            repo.get("mobilenet_v2", precision).directory, local.model_dir("mobilenet_v2", precision)
        )
    config_path = local.model_dir("mobilenet_v2", "int8") / CONFIG_FILE
    raw = json.loads(config_path.read_text())
    raw["extra"]["quality"]["recipe"]["held_out_variants"] = 16
    config_path.write_text(json.dumps(raw))
    old_sha = raw["file_sha256"]

    caplog.clear()  # the shared repository's first-use build announced itself above
    with caplog.at_level(logging.WARNING, logger="edgeinfer.models.repository"):
        used = local.get("mobilenet_v2", "int8")
        local.get("mobilenet_v2", "int8")
    assert used.config.file_sha256 == old_sha  # used as it is: nothing changes behind the user's back
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings  # once per build, not per load
    assert "built with an older version of the 'fast' INT8 recipe" in warnings[0]
    assert "`edgeinfer models build mobilenet_v2 --precision int8`" in warnings[0]

    assert main(["models", "list", "--json", "--home", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    row = next(m for m in listing["models"] if m["name"] == "mobilenet_v2")
    int8_row = next(b for b in row["builds"] if b["precision"] == "int8")
    assert int8_row["outdated"] == "built with an older version of the 'fast' INT8 recipe"

    assert main(["models", "build", "mobilenet_v2", "-p", "int8", "--home", str(tmp_path)]) == 0
    rebuilt = local.find("mobilenet_v2", "int8")
    assert rebuilt is not None and outdated(rebuilt.config) is None
    assert rebuilt.config.extra["quality"]["recipe"] == json.loads(json.dumps(asdict(named_recipe("fast"))))
    assert rebuilt.config.quality is not None and rebuilt.config.quality.passed
