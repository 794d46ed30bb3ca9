"""INT8 recipes: how a build quantizes, the named choices, and whether a stored build is current.

Kept apart from ``models/quantize.py`` (which needs ONNX Runtime's quantization tools) so that
loading a model can tell an outdated build without importing any of them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

from edgeinfer.errors import InvalidInput
from edgeinfer.models.config import ModelConfig
from edgeinfer.system.machine import int8_products_saturate

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
WEIGHT_ROUNDINGS = ("nearest", "gptq", "gptq-depthwise")


@dataclass(frozen=True)
class Int8Recipe:
    """How to quantize: each switch was measured (docs/BENCHMARKS.md, "INT8")."""

    equalize: bool = True
    residual_strength: float = 0.25
    bias_correction: bool = True  # analytic: each layer's own weight rounding
    empirical_bias_correction: bool = False  # measured on the INT8 network, layer by layer
    weight_rounding: str = "nearest"  # "gptq", "gptq-depthwise": ``models/rounding.py``
    per_channel: bool = True
    calibration_method: str = "minmax"
    reduce_range: bool = False
    exclude_op_types: tuple[str, ...] = ("Softmax",)
    exclude_nodes: tuple[str, ...] = ()  # by name
    last_stream_in_float: bool = False  # the last residual stream's nodes in FP32 ("accurate")
    exclude_first_conv: bool = False
    exclude_depthwise: bool = False
    calibration_variants: int = 8
    held_out_variants: int = 64  # 640 held-out inputs: about 240 pass the gate's decisiveness test
    seed: int = 0

    def __post_init__(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration_method must be one of {', '.join(CALIBRATION_METHODS)}, "
                f"got {self.calibration_method!r}"
            )
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(
                f"weight_rounding must be one of {', '.join(WEIGHT_ROUNDINGS)}, got {self.weight_rounding!r}"
            )
        if not 0.0 <= self.residual_strength <= 1.0:
            raise ValueError(f"residual_strength must be within 0..1, got {self.residual_strength}")
        if self.calibration_variants < 1 or self.held_out_variants < 1:
            raise ValueError("calibration_variants and held_out_variants must be at least 1")


# Named recipes for `edgeinfer models build --recipe`: "fast" keeps every layer it can in int8;
# "accurate" leaves MobileNetV2's last residual stream (8 of 155 nodes) and its first convolution
# in FP32 and corrects the biases layer by layer on the INT8 network (empirical bias correction):
# top-1 agreement with FP32 over all 640 held-out inputs 85-88% against fast's 78-80%, median KL
# about 0.02 against 0.063-0.066 (three seeds), the gate's figure 100% on each; a build of 1-1.5
# minutes instead of 20-35 s. The first convolution (3 input channels) is slower in int8 than in
# float on ONNX Runtime: in float it made "accurate" 6-10% faster there at the same agreement
# (5-9% slower than "fast"; no change in OpenVINO) (docs/BENCHMARKS.md, "INT8", third to fifth
# rounds).
INT8_RECIPES: dict[str, Int8Recipe] = {
    "fast": Int8Recipe(),
    "accurate": Int8Recipe(
        last_stream_in_float=True, exclude_first_conv=True, empirical_bias_correction=True
    ),
}
DEFAULT_RECIPE = "fast"


def for_this_cpu(recipe: Int8Recipe) -> Int8Recipe:
    """``recipe`` as this CPU should build it: with 7-bit weights (``reduce_range``) where int8
    products saturate (x86 without VNNI; :func:`~edgeinfer.system.machine.int8_products_saturate`)."""
    if recipe.reduce_range or not int8_products_saturate():
        return recipe
    return replace(recipe, reduce_range=True)


def named_recipe(name: str) -> Int8Recipe:
    """The INT8 recipe called ``name``, as this CPU builds it; :class:`InvalidInput` names the
    choices otherwise."""
    if name not in INT8_RECIPES:
        raise InvalidInput(f"unknown INT8 recipe {name!r}; choose one of {', '.join(INT8_RECIPES)}")
    return for_this_cpu(INT8_RECIPES[name])


def recipe_name(recipe: Int8Recipe) -> str:
    """The name ``recipe`` is known by here, or ``"custom"``."""
    return next((name for name in INT8_RECIPES if named_recipe(name) == recipe), "custom")


def built_with(config: ModelConfig, name: str) -> bool:
    """Whether the stored INT8 build ``config`` was made with the recipe called ``name``."""
    stored = config.extra.get("quality", {}).get("recipe")
    return stored is not None and _as_json(stored) == _as_json(asdict(named_recipe(name)))


def stored_recipe_name(config: ModelConfig) -> str:
    """The recipe name an INT8 build records; builds from before names were recorded were "fast"."""
    name = config.extra.get("quality", {}).get("recipe_name")
    return str(name) if name else DEFAULT_RECIPE


def outdated(config: ModelConfig) -> str | None:
    """Why a stored INT8 build no longer matches the recipe it was built with, or None.

    A build made with a named recipe whose definition has changed since (a newer edgeinfer) is
    outdated: `edgeinfer models build` rebuilds it. Custom recipes, other precisions and imported
    files (quantized by whoever made them, with no recipe of ours) never are.
    """
    if config.precision != "int8" or "quality" not in config.extra:
        return None
    name = stored_recipe_name(config)
    if name not in INT8_RECIPES or built_with(config, name):
        return None
    stored = config.extra.get("quality", {}).get("recipe") or {}
    wanted = named_recipe(name)
    if _as_json({**stored, "reduce_range": wanted.reduce_range}) == _as_json(asdict(wanted)):
        return (  # the same recipe, for the other kind of CPU
            "built with 8-bit weights, which saturate this CPU's int8 products (it needs 7-bit)"
            if wanted.reduce_range
            else "built with 7-bit weights for a CPU without VNNI; this CPU takes 8-bit weights"
        )
    return f"built with an older version of the {name!r} INT8 recipe"


def _as_json(recipe: dict[str, object]) -> str:
    """A recipe as stored in a config (tuples become lists), for comparing."""
    return json.dumps(recipe, sort_keys=True)
