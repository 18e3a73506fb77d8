"""Registry of the golden models in ``tests/models`` and what each one is for.

Plain data: one frozen entry per model, listed explicitly (no ``globals()``
scanning). ``make_models.py`` builds the files; ``tests/test_golden_models.py``
checks that the two agree. The conformance suite parametrizes over
``GOLDEN_MODELS`` and keeps its per-target exclusions/tolerances elsewhere, as
data keyed by ``GoldenModel.name``.

Kept importable on Python 3.9 (no ``X | Y`` annotations evaluated at runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Dict, Optional, Tuple

MODELS_DIR = Path(__file__).resolve().parent


class Task(str, Enum):
    """Postprocessing task (compares equal to its string value)."""

    CLASSIFY = "classify"
    DETECT = "detect"
    SEGMENT = "segment"
    RAW = "raw"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: Tuple[int, ...]
    dtype: str = "float32"


@dataclass(frozen=True)
class GoldenModel:
    """One golden model.

    ``image_size`` is (height, width) for image models -- the size a
    preprocessing ``resize`` step should target -- and ``None`` for models fed
    tensors directly (audio, token sequences).
    """

    name: str
    file: str
    exercises: Tuple[str, ...]
    inputs: Tuple[TensorSpec, ...]
    outputs: Tuple[TensorSpec, ...]
    task: Task
    image_size: Optional[Tuple[int, int]] = None
    num_classes: Optional[int] = None
    description: str = ""

    @property
    def is_image(self) -> bool:
        return self.image_size is not None

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.file


def _image(name: str, hw: Tuple[int, int], channels: int = 3) -> TensorSpec:
    return TensorSpec(name, (1, channels) + hw)


GOLDEN_MODELS: Tuple[GoldenModel, ...] = (
    GoldenModel(
        name="conv_bn_relu",
        file="conv_bn_relu.onnx",
        exercises=("Conv", "BatchNormalization", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "bn-folding"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("logits", (1, 10)),),
        task=Task.CLASSIFY,
        image_size=(32, 32),
        num_classes=10,
        description="Two Conv+BN+Relu stages (one strided), GAP, Gemm classifier.",
    ),
    GoldenModel(
        name="depthwise_separable",
        file="depthwise_separable.onnx",
        exercises=("Conv", "depthwise-conv", "pointwise-conv", "Clip", "relu6", "BatchNormalization", "bn-folding"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("logits", (1, 10)),),
        task=Task.CLASSIFY,
        image_size=(32, 32),
        num_classes=10,
        description="Depthwise (group=C) + pointwise convs with Clip(0,6); BN after a depthwise conv.",
    ),
    GoldenModel(
        name="residual_add",
        file="residual_add.onnx",
        exercises=("Conv", "Add", "residual", "projection-shortcut", "Relu"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("logits", (1, 10)),),
        task=Task.CLASSIFY,
        image_size=(32, 32),
        num_classes=10,
        description="Conv branch + 1x1 projection branch Add, then an identity-shortcut Add.",
    ),
    GoldenModel(
        name="squeeze_excite",
        file="squeeze_excite.onnx",
        exercises=("GlobalAveragePool", "Conv", "Relu", "HardSigmoid", "Mul", "broadcast-mul", "squeeze-excite"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("logits", (1, 10)),),
        task=Task.CLASSIFY,
        image_size=(32, 32),
        num_classes=10,
        description="SE block: GAP -> 1x1 reduce -> Relu -> 1x1 expand -> HardSigmoid -> Mul.",
    ),
    GoldenModel(
        name="activations",
        file="activations.onnx",
        exercises=("HardSwish", "HardSigmoid", "Sigmoid", "Mul", "silu", "Relu", "LeakyRelu", "Tanh"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("features", (1, 16, 16, 16)),),
        task=Task.RAW,
        image_size=(32, 32),
        description="One conv per activation, raw feature-map output so per-pixel error shows.",
    ),
    GoldenModel(
        name="pooling",
        file="pooling.onnx",
        exercises=("MaxPool", "AveragePool", "padded-pool", "GlobalAveragePool", "Flatten", "Gemm"),
        inputs=(_image("input", (32, 32)),),
        outputs=(TensorSpec("logits", (1, 10)),),
        task=Task.CLASSIFY,
        image_size=(32, 32),
        num_classes=10,
        description="MaxPool (plain, padded), AveragePool (padded count_include_pad=0, plain), GAP, Gemm.",
    ),
    GoldenModel(
        name="resize_concat",
        file="resize_concat.onnx",
        exercises=("Conv", "strided-conv", "Resize", "nearest-upsample", "Concat", "skip-connection"),
        inputs=(_image("input", (64, 64)),),
        outputs=(TensorSpec("mask_logits", (1, 4, 64, 64)),),
        task=Task.SEGMENT,
        image_size=(64, 64),
        num_classes=4,
        description="FPN-like: downsample, Resize nearest x2, Concat skip, 4-class segmentation head.",
    ),
    GoldenModel(
        name="yolo_head",
        file="yolo_head.onnx",
        exercises=(
            "Conv", "Sigmoid", "Mul", "silu", "Concat", "Reshape", "Split", "Transpose", "Softmax",
            "dfl", "Sub", "Add", "Div", "in-graph-decode", "yolov8-layout",
        ),
        inputs=(_image("input", (128, 128)),),
        outputs=(TensorSpec("output0", (1, 7, 320)),),
        task=Task.DETECT,
        image_size=(128, 128),
        num_classes=3,
        description="Tiny YOLOv8: strides 8 and 16, DFL boxes decoded in-graph to pixel cx,cy,w,h; "
        "output [1, 4+3, 320] with sigmoid class scores.",
    ),
    GoldenModel(
        name="attention_block",
        file="attention_block.onnx",
        exercises=(
            "LayerNormalization", "MatMul", "Add", "Reshape", "Transpose", "Softmax", "Mul", "Div", "Erf", "gelu",
            "attention", "residual",
        ),
        inputs=(TensorSpec("tokens", (1, 16, 32)),),
        outputs=(TensorSpec("hidden", (1, 16, 32)),),
        task=Task.RAW,
        description="Pre-LN transformer encoder block, T=16, D=32, 4 heads, Erf-GELU MLP.",
    ),
    GoldenModel(
        name="audio_conv1d",
        file="audio_conv1d.onnx",
        exercises=("Conv1d", "strided-conv", "BatchNormalization", "bn-folding", "Relu", "MaxPool1d",
                   "GlobalAveragePool", "Gemm", "tensor-input"),
        inputs=(TensorSpec("audio", (1, 1, 16000)),),
        outputs=(TensorSpec("logits", (1, 12)),),
        task=Task.CLASSIFY,
        num_classes=12,
        description="M5-style keyword spotter on 1 s of 16 kHz audio; not an image model.",
    ),
    GoldenModel(
        name="mobilenet_v2_class",
        file="mobilenet_v2_class.onnx",
        exercises=("Conv", "depthwise-conv", "Clip", "relu6", "Add", "inverted-residual", "GlobalAveragePool",
                   "Gemm", "benchmark"),
        inputs=(_image("input", (160, 160)),),
        outputs=(TensorSpec("logits", (1, 1000)),),
        task=Task.CLASSIFY,
        image_size=(160, 160),
        num_classes=1000,
        description="MobileNetV2 0.5 @160: 17 inverted residual blocks, head narrowed to 256, "
        "1000 classes; the int8-vs-fp32 speed benchmark model.",
    ),
)


def _index(models: Tuple[GoldenModel, ...]) -> Dict[str, GoldenModel]:
    index: Dict[str, GoldenModel] = {}
    for m in models:
        if m.name in index:
            raise ValueError(f"golden model {m.name!r} is listed twice")
        index[m.name] = m
    return index


_BY_NAME = _index(GOLDEN_MODELS)


def by_name(name: str) -> GoldenModel:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no golden model {name!r}; known: {', '.join(_BY_NAME)}") from None


def with_task(task: Task) -> Tuple[GoldenModel, ...]:
    return tuple(m for m in GOLDEN_MODELS if m.task == task)
