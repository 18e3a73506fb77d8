"""edgekit.preprocess: steps, JSON form, image/tensor sources, geometry, JPEG draft decoding."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgekit.errors import ConfigError, EdgekitError, InputError, ManifestError
from edgekit.preprocess import (
    Color,
    ColorMode,
    Dtype,
    Interpolation,
    Layout,
    LayoutOrder,
    Normalize,
    Preprocessed,
    Preprocessor,
    Resize,
    ResizeMode,
    TensorDtype,
    Transform,
    _draft_scale,
    default_image_steps,
    draft_request,
    preprocess,
    steps_from_json,
    steps_to_json,
)

pytestmark = pytest.mark.device

_RS = getattr(Image, "Resampling", Image)


# --------------------------------------------------------------------------- fixtures


def gradient(width: int, height: int) -> np.ndarray:
    """RGB: red grows left->right, green top->bottom, blue constant."""
    y, x = np.mgrid[0:height, 0:width]
    r = x * 255 // max(1, width - 1)
    g = y * 255 // max(1, height - 1)
    b = np.full_like(r, 60)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients + shapes + mild noise: what a JPEG encoder sees in a photo."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(gradient(width, height))
    d = ImageDraw.Draw(im)
    d.ellipse([width * 0.1, height * 0.2, width * 0.4, height * 0.7], fill=(250, 30, 30))
    d.rectangle([width * 0.55, height * 0.15, width * 0.9, height * 0.5], fill=(20, 20, 220))
    arr = np.asarray(im).astype(np.float32) + rng.normal(0, 3, (height, width, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


@pytest.fixture()
def png(tmp_path: Path) -> Path:
    p = tmp_path / "grad.png"
    Image.fromarray(gradient(64, 32)).save(p)
    return p


@pytest.fixture()
def big_jpeg(tmp_path: Path) -> Path:
    p = tmp_path / "photo.jpg"
    Image.fromarray(photo(1600, 900)).save(p, quality=92)
    return p


def pil(path: Path) -> Image.Image:
    """A PIL image that holds no open file (avoids ResourceWarnings)."""
    with Image.open(path) as im:
        im.load()
        return im.copy()


def run(steps, source) -> np.ndarray:
    return Preprocessor(steps)(source).tensor


RAW = [Layout("nhwc"), Dtype("uint8")]  # raw pixels out, for content checks


# --------------------------------------------------------------------------- step validation


def test_steps_coerce_strings_to_enums():
    r = Resize(10, 20, mode="letterbox", interpolation="area")
    assert r.mode is ResizeMode.LETTERBOX and r.interpolation is Interpolation.AREA
    assert r.mode == "letterbox"  # str-valued enum
    assert Color("bgr").mode is ColorMode.BGR
    assert Layout("nhwc").order is LayoutOrder.NHWC
    assert Dtype("int8", scale=0.1, zero_point=3).dtype is TensorDtype.INT8
    assert Dtype(np.float16).dtype is TensorDtype.FLOAT16
    assert Normalize([0.5], [0.25]).mean == (0.5,)


def test_steps_are_frozen():
    with pytest.raises(Exception):
        Resize(1, 1).height = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Resize(10, 10, mode="x"), "\"mode\" must be one of {'stretch', 'letterbox', 'crop'}, but got 'x'"),
        (lambda: Resize(10, 10, interpolation="lanczos"), '"interpolation" must be one of'),
        (lambda: Color("hsv"), "\"mode\" must be one of {'rgb', 'bgr', 'gray'}, but got 'hsv'"),
        (lambda: Layout("chw"), "\"order\" must be one of {'nchw', 'nhwc'}, but got 'chw'"),
        (lambda: Dtype("float64"), '"dtype" must be one of'),
        (lambda: Resize(0, 10), '"height" must be a positive integer, but got 0'),
        (lambda: Resize(10, 2.5), '"width" must be a positive integer'),
        (lambda: Resize(10, True), '"width" must be a positive integer'),
        (lambda: Resize(10, 10, pad_value=300), '"pad_value" must be an integer in 0..255'),
        (lambda: Normalize((0.5,), (0.0,)), '"std" must be positive finite numbers'),
        (lambda: Normalize((0.5, 0.5, 0.5), (1.0, 1.0)), '"mean" and "std" must have the same length'),
        (lambda: Normalize((float("nan"),), (1.0,)), '"mean" must be finite numbers'),
        (lambda: Normalize((0.0,), (1.0,), scale=0), '"scale" must be a positive finite number'),
        (lambda: Dtype("float32", scale=0.1), '"scale" applies only to integer dtypes'),
        (lambda: Dtype("int8", scale=0.1, zero_point=200), '"zero_point" must be an integer in -128..127'),
        (lambda: Dtype("uint8", zero_point=3), '"zero_point" needs "scale"'),
        (lambda: Dtype("uint8", scale=-1.0), '"scale" must be a positive finite number'),
    ],
)
def test_step_validation_errors(make, message):
    with pytest.raises(ConfigError) as e:
        make()
    assert message in str(e.value)


@pytest.mark.parametrize(
    "steps, message",
    [
        ([Normalize(), Resize(4, 4)], "steps[1]: resize must come before normalize, layout and dtype"),
        ([Layout("nchw"), Color("rgb")], "steps[1]: color must come before"),
        ([Resize(4, 4), Resize(8, 8)], "steps[1]: more than one resize step (the first is steps[0])"),
        ([Color("rgb"), Dtype("float32"), Normalize()], "normalize must come before dtype"),
        ([Resize(4, 4), Normalize(), Dtype("uint8")], "cannot follow normalize"),
        ([Resize(4, 4), Dtype("int8")], "int8 needs scale and zero_point"),
        ([{"op": "color", "mode": "rgb"}], "use steps_from_json"),
    ],
)
def test_preprocessor_ordering_errors(steps, message):
    with pytest.raises(ConfigError) as e:
        Preprocessor(steps)
    assert message in str(e.value)


def test_is_image():
    assert Preprocessor([Resize(4, 4)]).is_image
    assert Preprocessor([Color("gray")]).is_image
    assert not Preprocessor([Dtype("float16")]).is_image
    assert not Preprocessor([]).is_image


# --------------------------------------------------------------------------- resize modes


def test_stretch_shape_and_content(png):
    out = run([Resize(16, 32), *RAW], png)  # 64x32 -> 32x16: exactly half
    assert out.shape == (1, 16, 32, 3) and out.dtype == np.uint8
    ref = np.asarray(pil(png).convert("RGB").resize((32, 16), _RS.BILINEAR))
    np.testing.assert_array_equal(out[0], ref)
    assert out[0, 0, 0, 0] < 10 and out[0, 0, -1, 0] > 245  # red gradient kept left->right


@pytest.mark.parametrize("interp", ["nearest", "bilinear", "bicubic", "area"])
@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_every_mode_and_interpolation_shape(png, mode, interp):
    pre = Preprocessor(default_image_steps(20, 30, resize=mode, interpolation=interp))
    res = pre(png)
    assert isinstance(res, Preprocessed)
    assert res.tensor.shape == (1, 3, 20, 30) and res.tensor.dtype == np.float32
    assert res.tensor.flags.c_contiguous
    assert 0.0 <= res.tensor.min() and res.tensor.max() <= 1.0
    assert pre.size == (20, 30)


def test_interpolations_differ_as_expected():
    arr = np.zeros((8, 8), np.uint8)
    arr[::2, ::2] = 255  # one lit pixel in every 2x2 cell: area mean = 63.75
    steps = lambda i: [Color("gray"), Resize(4, 4, interpolation=i), *RAW]  # noqa: E731
    area = run(steps("area"), arr)[0, :, :, 0]
    nearest = run(steps("nearest"), arr)[0, :, :, 0]
    assert np.all(area == 64)  # exact box average
    assert set(np.unique(nearest)) <= {0, 255}  # point sampling
    # area upscaling uses bilinear (OpenCV INTER_AREA semantics), not blocky box.
    up = run([Color("gray"), Resize(16, 16, interpolation="area"), *RAW], arr)
    bil = run([Color("gray"), Resize(16, 16, interpolation="bilinear"), *RAW], arr)
    np.testing.assert_array_equal(up, bil)


def test_letterbox_pads_and_centres(tmp_path):
    p = tmp_path / "white.png"
    Image.new("RGB", (100, 50), (255, 255, 255)).save(p)
    res = Preprocessor([Resize(60, 60, mode="letterbox", pad_value=7), *RAW])(p)
    img = res.tensor[0]
    assert img.shape == (60, 60, 3)
    # 100x50 -> 60x30, centred: 15 pad rows on top and bottom.
    assert np.all(img[:15] == 7) and np.all(img[45:] == 7)
    assert np.all(img[15:45] == 255)
    t = res.transform
    assert t.pad == (0.0, 15.0) and t.scale == (0.6, 0.6) and t.original_size == (100, 50)


def test_letterbox_odd_padding_and_gray(tmp_path):
    p = tmp_path / "tall.png"
    Image.new("L", (21, 60), 200).save(p)
    img = run([Color("gray"), Resize(30, 30, mode="letterbox"), *RAW], p)[0, :, :, 0]
    # 21x60 -> 10.5 -> round 10 (banker's) or 11 wide; left pad is the floor half.
    cols = np.where(np.all(img == 200, axis=0))[0]
    left, right = cols[0], 30 - cols[-1] - 1
    assert abs(left - right) <= 1 and left <= right
    assert np.all(img[:, :left] == 114)


def test_crop_takes_the_centre(tmp_path):
    # 300x100: left third red, middle third green, right third blue.
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :100, 0] = 255
    arr[:, 100:200, 1] = 255
    arr[:, 200:, 2] = 255
    p = tmp_path / "thirds.png"
    Image.fromarray(arr).save(p)
    res = Preprocessor([Resize(50, 50, mode="crop", interpolation="nearest"), *RAW])(p)
    img = res.tensor[0]
    assert img.shape == (50, 50, 3)
    assert np.all(img[..., 1] == 255) and np.all(img[..., 0] == 0) and np.all(img[..., 2] == 0)
    t = res.transform
    assert t.scale == (0.5, 0.5) and t.crop == pytest.approx((50.0, 0.0)) and t.pad == (0.0, 0.0)


def test_crop_matches_resize_then_centre_crop():
    arr = photo(120, 80)
    out = run([Resize(40, 40, mode="crop"), *RAW], arr)[0].astype(int)
    full = np.asarray(Image.fromarray(arr).resize((60, 40), _RS.BILINEAR)).astype(int)
    ref = full[:, 10:50]
    assert np.abs(out - ref).mean() < 1.0


def test_no_resize_keeps_size():
    arr = gradient(7, 5)
    res = Preprocessor([Color("rgb"), Layout("nhwc"), Dtype("uint8")])(arr)
    np.testing.assert_array_equal(res.tensor[0], arr)
    assert res.transform.original_size == (7, 5) and res.transform.scale == (1.0, 1.0)


# --------------------------------------------------------------------------- numbers


def test_normalize_matches_numpy_formula(png):
    mean, std, scale = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1 / 255
    out = run([Color("rgb"), Resize(16, 32), Normalize(mean, std, scale), Layout("nhwc")], png)
    x = run([Color("rgb"), Resize(16, 32), *RAW], png)[0].astype(np.float64)
    ref = (x * scale - np.array(mean)) / np.array(std)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0], ref, rtol=1e-5, atol=1e-5)


def test_normalize_single_value_broadcasts_and_custom_scale():
    arr = gradient(8, 4)
    out = run([Color("rgb"), Normalize((127.5,), (127.5,), scale=1.0), Layout("nhwc")], arr)
    np.testing.assert_allclose(out[0], arr / 127.5 - 1.0, atol=1e-6)


def test_normalize_channel_mismatch_is_input_error():
    pre = Preprocessor([Color("gray"), Normalize((0.1, 0.2, 0.3), (1.0, 1.0, 1.0))])
    with pytest.raises(InputError) as e:
        pre(gradient(4, 4))
    assert "3 mean values" in str(e.value) and "1 channel" in str(e.value)


def test_layout_nchw_vs_nhwc():
    arr = photo(20, 10)
    nchw = run([Color("rgb"), Normalize((0.5,), (0.5,)), Layout("nchw")], arr)
    nhwc = run([Color("rgb"), Normalize((0.5,), (0.5,)), Layout("nhwc")], arr)
    assert nchw.shape == (1, 3, 10, 20) and nhwc.shape == (1, 10, 20, 3)
    np.testing.assert_array_equal(nchw, nhwc.transpose(0, 3, 1, 2))
    assert nchw.flags.c_contiguous and nhwc.flags.c_contiguous
    # No layout step: NHWC with the batch dimension.
    assert run([Color("rgb")], arr).shape == (1, 10, 20, 3)


def test_int8_quantized_input_matches_round_clip_formula():
    arr = photo(32, 24)
    mean, std, s, zp = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.02, -3
    out = run([Color("rgb"), Normalize(mean, std), Layout("nchw"), Dtype("int8", scale=s, zero_point=zp)], arr)
    y = (arr.astype(np.float64) / 255 - np.array(mean)) / np.array(std)
    ref = np.clip(np.rint(y / s) + zp, -128, 127).astype(np.int8).transpose(2, 0, 1)[None]
    assert out.dtype == np.int8 and out.shape == ref.shape
    diff = np.abs(out.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float32 vs float64 only at ties


def test_uint8_quantized_exact_ties_round_half_even_then_zero_point():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = run([Color("gray"), Layout("nhwc"), Dtype("uint8", scale=2.0, zero_point=3)], arr)
    ref = np.clip(np.rint(arr / 2.0) + 3, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[0, :, :, 0], ref)


def test_uint8_raw_and_float16():
    arr = photo(10, 6)
    raw = run([Color("rgb"), Layout("nchw"), Dtype("uint8")], arr)
    np.testing.assert_array_equal(raw[0], arr.transpose(2, 0, 1))
    half = run([Color("rgb"), Normalize((0.0,), (1.0,)), Dtype("float16")], arr)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half[0].astype(np.float32), arr / 255.0, atol=1e-3)
    # No normalize, no dtype: float32 0..255.
    f = run([Color("rgb")], arr)
    assert f.dtype == np.float32 and f.max() == arr.max()


def test_gray_and_bgr():
    arr = photo(16, 12)
    gray = run([Color("gray"), Layout("nchw"), Dtype("uint8")], arr)
    assert gray.shape == (1, 1, 12, 16)
    np.testing.assert_array_equal(gray[0, 0], np.asarray(Image.fromarray(arr).convert("L")))
    bgr = run([Color("bgr"), Layout("nhwc"), Dtype("uint8")], arr)
    np.testing.assert_array_equal(bgr[0], arr[:, :, ::-1])
    bgr_n = run([Color("bgr"), Normalize((0.1, 0.2, 0.3), (1.0, 2.0, 4.0)), Layout("nchw")], arr)
    ref = ((arr[:, :, ::-1] / 255.0 - [0.1, 0.2, 0.3]) / [1.0, 2.0, 4.0]).transpose(2, 0, 1)
    np.testing.assert_allclose(bgr_n[0], ref, atol=1e-5)


def test_gray_jpeg_draft_decodes_luma(big_jpeg):
    pre = Preprocessor([Color("gray"), Resize(100, 100), *RAW])
    out = pre(big_jpeg).tensor
    full = np.asarray(pil(big_jpeg).convert("L").resize((100, 100), _RS.BILINEAR)).astype(int)
    assert out.shape == (1, 100, 100, 1)
    assert np.abs(out[0, :, :, 0].astype(int) - full).mean() < 2.0


# --------------------------------------------------------------------------- sources


def test_sources_all_agree(tmp_path):
    arr = photo(40, 30)
    p = tmp_path / "a.png"
    Image.fromarray(arr).save(p)
    steps = default_image_steps(20, 20)
    ref = run(steps, arr)
    for source in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), pil(p)):
        np.testing.assert_array_equal(run(steps, source), ref)


def test_array_channel_variants():
    rgb = photo(12, 10)
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    steps = [Color("gray"), *RAW]
    np.testing.assert_array_equal(run(steps, gray)[0, :, :, 0], gray)
    np.testing.assert_array_equal(run(steps, gray[:, :, None])[0, :, :, 0], gray)
    rgba = np.concatenate([rgb, np.full((10, 12, 1), 9, np.uint8)], axis=-1)
    np.testing.assert_array_equal(run([Color("rgb"), *RAW], rgba)[0], rgb)
    # gray array to an RGB model: replicated channels.
    out = run([Color("rgb"), *RAW], gray)[0]
    assert np.all(out[..., 0] == gray) and np.all(out[..., 2] == gray)


def test_tensor_sources_bypass_image_steps(tmp_path):
    t = np.random.default_rng(0).normal(size=(1, 3, 5, 5)).astype(np.float64)
    npy = tmp_path / "t.npy"
    np.save(npy, t)
    pre = Preprocessor(default_image_steps(224, 224, mean=(0.5,) * 3))
    for source in (npy, str(npy), npy.read_bytes(), t):
        res = pre(source)
        assert res.tensor.dtype == np.float32 and res.tensor.shape == (1, 3, 5, 5)
        np.testing.assert_allclose(res.tensor, t, rtol=1e-6)
        assert res.transform == Transform.identity()
    # a non-image model passes uint8 arrays through as tensors too
    u = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert Preprocessor([])(u).tensor is u


def test_tensor_dtype_cast_and_quantize():
    x = np.array([[-1.0, 0.0, 0.5, 3.0]], np.float32)
    q = Preprocessor([Dtype("int8", scale=0.01, zero_point=5)])(x).tensor
    np.testing.assert_array_equal(q, np.clip(np.rint(x / 0.01) + 5, -128, 127).astype(np.int8))
    ids = Preprocessor([Dtype("int8")])(np.array([1, -2, 3], np.int64)).tensor
    assert ids.dtype == np.int8 and ids.tolist() == [1, -2, 3]
    with pytest.raises(InputError, match="outside int8's range"):
        Preprocessor([Dtype("int8")])(np.array([1000.0]))


def test_image_to_tensor_model_is_input_error(png):
    pre = Preprocessor([Dtype("float32")])
    for source in (png, png.read_bytes(), pil(png)):
        with pytest.raises(InputError, match="this model takes tensors"):
            pre(source)


def test_bad_inputs(tmp_path):
    pre = Preprocessor(default_image_steps(8, 8))
    with pytest.raises(InputError, match="no such file; check the path"):
        pre(tmp_path / "missing.jpg")
    with pytest.raises(InputError, match="no such file"):
        pre(tmp_path / "missing.npy")
    txt = tmp_path / "x.txt"
    txt.write_text("hello, not a picture")
    with pytest.raises(InputError) as e:
        pre(txt)
    msg = str(e.value)
    assert "x.txt is not an image Pillow can decode (" in msg and "or a .npy tensor" in msg
    assert "\n" not in msg
    with pytest.raises(InputError, match="the given bytes is not an image"):
        pre(b"\x00\x01garbage")
    with pytest.raises(InputError, match=r"2 channels"):
        pre(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(InputError, match=r"transpose\(1, 2, 0\)"):
        pre(np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(InputError, match="cannot preprocess a list"):
        pre([[1, 2], [3, 4]])
    with pytest.raises(InputError, match="is a directory"):
        pre(tmp_path)
    bad_npy = tmp_path / "bad.npy"
    bad_npy.write_bytes(b"not numpy")
    with pytest.raises(InputError, match="not a readable .npy tensor"):
        pre(bad_npy)
    truncated = tmp_path / "cut.jpg"
    buf = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(buf, format="JPEG")
    truncated.write_bytes(buf.getvalue()[:300])
    with pytest.raises(InputError, match="cut.jpg"):
        pre(truncated)
    for err in (InputError, ConfigError, ManifestError):
        assert issubclass(err, EdgekitError)


def test_exif_orientation_is_applied(tmp_path):
    arr = gradient(80, 40)  # wide
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored wide; a viewer rotates it 90 degrees clockwise
    p = tmp_path / "rotated.jpg"
    im.save(p, quality=95, exif=exif)
    res = Preprocessor([Resize(20, 10), *RAW])(p)
    assert res.transform.original_size == (40, 80)  # tall, as displayed
    upright = np.asarray(pil(p).transpose(_TRANSPOSE.ROTATE_270).convert("RGB").resize((10, 20), _RS.BILINEAR))
    assert np.abs(res.tensor[0].astype(int) - upright.astype(int)).mean() < 3


_TRANSPOSE = getattr(Image, "Transpose", Image)


# --------------------------------------------------------------------------- transform


def test_transform_inverts_letterbox(tmp_path):
    W0, H0 = 400, 200
    box = np.array([[100.0, 50.0, 180.0, 150.0]])
    arr = np.zeros((H0, W0, 3), np.uint8)
    arr[50:150, 100:180] = 255
    p = tmp_path / "box.png"
    Image.fromarray(arr).save(p)
    res = Preprocessor([Resize(128, 128, mode="letterbox", interpolation="nearest"), *RAW])(p)
    img = res.tensor[0, :, :, 0]
    ys, xs = np.where(img == 255)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)
    back = res.transform.to_original(found)
    np.testing.assert_allclose(back, box, atol=1 / res.transform.scale[0] + 1e-6)
    np.testing.assert_allclose(res.transform.to_original(res.transform.to_input(box)), box, atol=1e-9)


def test_transform_inverts_crop_and_clips(tmp_path):
    W0, H0 = 300, 200
    arr = np.zeros((H0, W0, 3), np.uint8)
    arr[80:120, 130:170] = 255  # centred box
    p = tmp_path / "c.png"
    Image.fromarray(arr).save(p)
    res = Preprocessor([Resize(100, 100, mode="crop", interpolation="nearest"), *RAW])(p)
    t = res.transform
    img = res.tensor[0, :, :, 0]
    ys, xs = np.where(img == 255)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)
    np.testing.assert_allclose(t.to_original(found), [[130, 80, 170, 120]], atol=2.0)
    # A box that covers the whole model input maps to the crop window, and a box
    # sticking out of the input is clipped to the original image.
    np.testing.assert_allclose(t.to_original([[0, 0, 100, 100]]), [[50, 0, 250, 200]], atol=1e-6)
    out = t.to_original(np.array([[-500, -500, 1000, 1000]], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0, 300, 200]])


def test_transform_stretch_identity_and_bad_shape():
    t = Preprocessor([Resize(50, 100)])(np.zeros((100, 400, 3), np.uint8)).transform
    np.testing.assert_allclose(t.to_original([[10, 10, 20, 20]]), [[40, 20, 80, 40]])
    ident = Transform.identity()
    np.testing.assert_array_equal(ident.to_original([[1, 2, 3, 4]]), [[1, 2, 3, 4]])
    assert ident.to_original(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(InputError, match=r"shape \(N, 4\)"):
        ident.to_original([1, 2, 3])


# --------------------------------------------------------------------------- JSON


def test_json_round_trip():
    steps = (
        Color("bgr"),
        Resize(320, 480, mode="letterbox", interpolation="bicubic", pad_value=0),
        Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        Layout("nhwc"),
        Dtype("int8", scale=0.02, zero_point=-3),
    )
    data = steps_to_json(steps)
    assert data[1] == {"op": "resize", "size": [320, 480], "mode": "letterbox", "interpolation": "bicubic", "pad_value": 0}
    assert data[2]["scale"] == 0.00392156862745098
    assert data[4] == {"op": "dtype", "dtype": "int8", "scale": 0.02, "zero_point": -3}
    again = steps_from_json(json.loads(json.dumps(data)))
    assert again == steps
    assert steps_from_json(steps_to_json(default_image_steps(8, 8))) == default_image_steps(8, 8)


def test_json_expands_single_mean_and_defaults_optional_fields():
    data = steps_to_json([Color("rgb"), Normalize((0.5,), (0.25,))])
    assert data[1]["mean"] == [0.5, 0.5, 0.5] and data[1]["std"] == [0.25, 0.25, 0.25]
    gray = steps_to_json([Color("gray"), Normalize((0.5,), (0.25,))])
    assert gray[1]["mean"] == [0.5]
    steps = steps_from_json([{"op": "resize", "size": [4, 6]}, {"op": "dtype", "dtype": "float16"}])
    assert steps == (Resize(4, 6), Dtype("float16"))


def _manifest(mean):
    return [
        {"op": "color", "mode": "rgb"},
        {"op": "resize", "size": [224, 224]},
        {"op": "normalize", "mean": mean, "std": [1, 1, 1]},
    ]


@pytest.mark.parametrize(
    "data, message",
    [
        (_manifest([0.5]), "manifest.preprocess[2].mean: expected 3 numbers, got 1"),
        (_manifest("0.5"), "manifest.preprocess[2].mean: expected a list of 3 numbers"),
        ({"op": "color"}, "manifest.preprocess: expected a list of steps, got an object"),
        (["color"], 'manifest.preprocess[0]: expected an object with an "op" field, got a string'),
        ([{"mode": "rgb"}], "manifest.preprocess[0].op: missing; known ops: color, resize, normalize, layout, dtype"),
        ([{"op": "blur"}], "manifest.preprocess[0].op: unknown op 'blur'; known ops: color, resize, normalize, layout, dtype"),
        ([{"op": "color", "mode": "hsv"}], "manifest.preprocess[0].mode: expected one of {'rgb', 'bgr', 'gray'}, got 'hsv'"),
        ([{"op": "color"}], "manifest.preprocess[0].mode: missing"),
        ([{"op": "color", "mode": "rgb", "gamma": 2}], "manifest.preprocess[0]: unknown field 'gamma' for op 'color'"),
        ([{"op": "resize", "size": 224}], "manifest.preprocess[0].size: expected [height, width] as 2 positive integers, got 224"),
        ([{"op": "resize", "size": [2, 2], "pad_value": "grey"}], "manifest.preprocess[0].pad_value: expected an integer, got 'grey'"),
        ([{"op": "resize", "size": [2, 2], "pad_value": 300}], "manifest.preprocess[0]: \"pad_value\" must be an integer in 0..255"),
        ([{"op": "layout", "order": 1}], "manifest.preprocess[0].order: expected one of {'nchw', 'nhwc'}, got 1"),
        ([{"op": "dtype", "dtype": "int8", "scale": "x"}], "manifest.preprocess[0].scale: expected a number, got 'x'"),
        ([{"op": "dtype", "dtype": "int8", "scale": 0.1, "zero_point": 0.5}], "manifest.preprocess[0].zero_point: expected an integer"),
        ([{"op": "normalize", "mean": [0, 0, 0], "std": [1, 1, 1]}, {"op": "color", "mode": "gray"}], "manifest.preprocess[1]: color must come before"),
        ([{"op": "color", "mode": "gray"}, {"op": "normalize", "mean": [0, 0, 0], "std": [1]}], "manifest.preprocess[1].mean: expected 1 number, got 3"),
        ([{"op": "normalize", "mean": [0, 0, 0], "std": [0, 1, 1]}], 'manifest.preprocess[0]: "std" must be positive'),
    ],
)
def test_steps_from_json_errors_name_the_field(data, message):
    with pytest.raises(ManifestError) as e:
        steps_from_json(data, where="manifest.preprocess")
    assert message in str(e.value)


def test_default_image_steps():
    steps = default_image_steps(224, 320, resize="letterbox", layout="nhwc")
    assert steps == (
        Color("rgb"),
        Resize(224, 320, mode="letterbox"),
        Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1 / 255),
        Layout("nhwc"),
        Dtype("float32"),
    )
    gray = default_image_steps(32, 32, color="gray")  # (0,0,0)/(1,1,1) fit one channel
    assert run(gray, photo(40, 40)).shape == (1, 1, 32, 32)
    raw = default_image_steps(32, 32, dtype="uint8")
    assert not any(isinstance(s, Normalize) for s in raw)
    q = default_image_steps(32, 32, dtype="int8", quant_scale=0.02, zero_point=-128)
    assert q[-1] == Dtype("int8", scale=0.02, zero_point=-128)
    with pytest.raises(ConfigError, match="int8 needs scale"):
        default_image_steps(32, 32, dtype="int8")
    with pytest.raises(ConfigError, match="raw 0..255 pixels"):
        default_image_steps(32, 32, dtype="uint8", mean=(0.5, 0.4, 0.3))
    with pytest.raises(ConfigError, match='"mode" must be one of'):
        default_image_steps(32, 32, resize="fit")
    assert preprocess(raw, photo(40, 40)).tensor.dtype == np.uint8


# --------------------------------------------------------------------------- JPEG draft


def test_draft_request_sizes():
    assert draft_request((1920, 1080), Resize(224, 224)) == (224, 224)
    assert _draft_scale((1920, 1080), (224, 224)) == 4  # -> 480x270, both >= 224
    # crop keeps the *shorter* side >= the target: 1080 -> 224 means width 399.
    need = draft_request((1920, 1080), Resize(224, 224, mode="crop"))
    assert need == (399, 224)
    k = _draft_scale((1920, 1080), need)
    assert k == 4 and -(-1080 // k) >= 224
    # letterbox needs the scaled image (640x360), not the canvas.
    need = draft_request((1920, 1080), Resize(640, 640, mode="letterbox"))
    assert need == (640, 360) and _draft_scale((1920, 1080), need) == 2
    assert draft_request((300, 300), Resize(224, 224)) is None  # no 2x to spare
    assert draft_request((100, 100), Resize(224, 224)) is None  # upscaling


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_jpeg_draft_is_used_and_close_to_full_decode(big_jpeg, mode, monkeypatch):
    from PIL import ImageFile

    decoded = []
    real_load = ImageFile.ImageFile.load  # JpegImageFile decodes here

    def spy_load(self):
        out = real_load(self)
        if getattr(self, "format", None) == "JPEG":
            decoded.append(self.size)
        return out

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    steps = [Color("rgb"), Resize(180, 180, mode=mode), *RAW]
    fast = Preprocessor(steps)(big_jpeg)
    monkeypatch.undo()
    assert decoded and decoded[0][0] < 1600, decoded  # DCT-scaled, not 1600x900
    # the decoded image is still big enough for what the resize keeps
    need = draft_request((1600, 900), Resize(180, 180, mode=mode))
    assert decoded[0][0] >= need[0] and decoded[0][1] >= need[1]
    # Same picture as a full decode of the pixels (array source: no draft possible).
    full = np.asarray(pil(big_jpeg).convert("RGB"))
    slow = Preprocessor(steps)(full)
    diff = np.abs(fast.tensor.astype(int) - slow.tensor.astype(int))
    assert diff.mean() < 2.0, diff.mean()
    assert fast.transform == slow.transform


def test_jpeg_bytes_use_draft_and_geometry_is_in_original_pixels(big_jpeg):
    res = Preprocessor([Resize(90, 160, mode="letterbox"), *RAW])(big_jpeg.read_bytes())
    assert res.transform.original_size == (1600, 900)
    np.testing.assert_allclose(res.transform.to_original([[0, 0, 160, 90]]), [[0, 0, 1600, 900]])


def test_jpeg_with_partial_dct_block(tmp_path):
    # 1001x501 is not a multiple of the 1/4 scale; geometry must stay in original pixels.
    arr = photo(1001, 501)
    p = tmp_path / "odd.jpg"
    Image.fromarray(arr).save(p, quality=95)
    fast = Preprocessor([Resize(120, 120), *RAW])(p).tensor.astype(int)
    slow = Preprocessor([Resize(120, 120), *RAW])(np.asarray(pil(p).convert("RGB"))).tensor.astype(int)
    assert np.abs(fast - slow).mean() < 2.0


# --------------------------------------------------------------------------- images deeper than 8 bits
# Real files written by Pillow: 16-bit gray PNGs and 32-bit float TIFFs.  Pillow's own
# convert("L"/"RGB") clips them to 0..255 (a 16-bit PNG turns white, a 0..1 TIFF black).

UNIT = [Normalize((0.0,), (1.0,), 1.0 / 255.0), Layout("nchw"), Dtype("float32")]  # y = pixel / 255


def ramp16(height: int = 48, width: int = 64) -> np.ndarray:
    """uint16 values over the whole 0..65535 range, most of them far above 255."""
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 1021 + y * 331) % 65536).astype(np.uint16)


def test_16bit_png_is_scaled_by_its_full_range_not_clipped(tmp_path):
    a = ramp16()
    path = tmp_path / "depth16.png"
    Image.fromarray(a).save(path)
    assert pil(path).mode == "I;16"  # a real 16-bit PNG
    gray = Preprocessor([Color("gray"), *UNIT])(path).tensor
    assert gray.shape == (1, 1, 48, 64)
    np.testing.assert_allclose(gray[0, 0], a / 65535.0, atol=1e-6)  # white is 65535, not 255
    clipped = np.minimum(a, 255) / 255.0  # what the 8-bit conversion made of it
    assert float(np.abs(gray[0, 0] - clipped).mean()) > 0.3
    # an RGB model gets the gray value in every channel, as for an 8-bit gray image
    rgb = Preprocessor([Color("rgb"), *UNIT])(path).tensor
    assert rgb.shape == (1, 3, 48, 64)
    for c in range(3):
        np.testing.assert_array_equal(rgb[0, c], gray[0, 0])


@pytest.mark.parametrize("mode", ["stretch", "letterbox", "crop"])
def test_16bit_png_resized_matches_the_8bit_picture(tmp_path, mode):
    """Resampled as float: within one 8-bit step of the same picture at 8 bits."""
    a = ramp16(96, 128)
    a = (a // 257 * 257).astype(np.uint16)  # exactly representable at 8 bits
    path = tmp_path / "d.png"
    Image.fromarray(a).save(path)
    steps = [Color("rgb"), Resize(40, 50, mode=mode, interpolation="bilinear"), *UNIT]
    deep = Preprocessor(steps)(path)
    eight = Preprocessor(steps)(np.repeat((a // 257).astype(np.uint8)[:, :, None], 3, axis=2))
    assert deep.transform == eight.transform
    assert float(np.abs(deep.tensor - eight.tensor).max()) <= 1.0 / 255 + 1e-6
    if mode == "letterbox":  # the borders hold the pad value on the same scale
        assert deep.tensor[0, 0, 0, 0] == pytest.approx(114 / 255)


def test_16bit_png_raw_uint8_pixels(tmp_path):
    a = ramp16()
    path = tmp_path / "r.png"
    Image.fromarray(a).save(path)
    out = Preprocessor([Color("gray"), Resize(48, 64), Layout("nhwc"), Dtype("uint8")])(path).tensor
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, :, 0], np.rint(a / 257.0).astype(np.uint8))


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    f = np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    path = tmp_path / "f.tif"
    Image.fromarray(f).save(path)
    assert pil(path).mode == "F"
    out = Preprocessor([Color("gray"), *UNIT])(path).tensor
    np.testing.assert_allclose(out[0, 0], f, atol=1e-6)
    assert float(out.max()) == pytest.approx(1.0)  # the clip made this 1/255 at most
    # a PIL image in mode F is the same
    np.testing.assert_allclose(Preprocessor([Color("gray"), *UNIT])(pil(path)).tensor, out)


def test_tiff_with_recorded_sample_range_uses_it(tmp_path):
    from PIL import TiffImagePlugin

    f = np.linspace(0.0, 1000.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[340], tags[341] = 0.0, 1000.0  # SMinSampleValue, SMaxSampleValue
    path = tmp_path / "range.tif"
    Image.fromarray(f).save(path, tiffinfo=tags)
    out = Preprocessor([Color("gray"), *UNIT])(path).tensor
    np.testing.assert_allclose(out[0, 0], f / 1000.0, atol=1e-6)
    # a 12-bit camera frame in a 16-bit TIFF that says white is 4095
    a = (np.arange(48 * 64).reshape(48, 64) % 4096).astype(np.uint16)
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[341] = 4095
    path12 = tmp_path / "twelve.tif"
    Image.fromarray(a).save(path12, tiffinfo=tags)
    out = Preprocessor([Color("gray"), *UNIT])(path12).tensor
    np.testing.assert_allclose(out[0, 0], a / 4095.0, atol=1e-6)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.linspace(0.0, 2.0, 64, dtype=np.float32).reshape(8, 8), r"has values 0\.\.2, outside its 0\.\.1 range"),
        (np.linspace(-1.0, 1.0, 64, dtype=np.float32).reshape(8, 8), r"has values -1\.\.1, outside its 0\.\.1 range"),
        (np.full((8, 8), np.nan, dtype=np.float32), "NaN or infinite pixels"),
        (np.arange(64, dtype=np.int32).reshape(8, 8) * 100000, "32-bit integer image"),
    ],
)
def test_deep_images_without_a_known_range_are_refused_in_one_line(tmp_path, array, message):
    path = tmp_path / "bad.tif"
    Image.fromarray(array).save(path)
    with pytest.raises(InputError, match=message) as info:
        Preprocessor([Color("rgb"), Resize(8, 8), *UNIT])(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# --------------------------------------------------------------------------- masks back to the original image


def test_mask_maps_back_like_boxes():
    """A mask region and the box around it land on the same original pixels."""
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    for mode in ("stretch", "letterbox"):
        t = Preprocessor([Resize(64, 64, mode=mode), *RAW])(image).transform
        box_in = t.to_input([[100.0, 60.0, 260.0, 180.0]])[0]  # an object in original pixels
        mask = np.zeros((64, 64), dtype=np.int32)
        x1, y1, x2, y2 = (int(round(v)) for v in box_in)
        mask[y1:y2, x1:x2] = 7
        back = t.mask_to_original(mask)
        assert back.shape == (300, 400) and set(np.unique(back)) == {0, 7}
        ys, xs = np.nonzero(back == 7)
        got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        np.testing.assert_allclose(got, t.to_original([[x1, y1, x2, y2]])[0], atol=400 / 64)
        # a head at 1/4 of the input resolution covers the same picture (to within its 4-pixel cells)
        low = np.zeros((16, 16), dtype=np.int32)
        low[y1 // 4 : -(-y2 // 4), x1 // 4 : -(-x2 // 4)] = 7
        ys, xs = np.nonzero(t.mask_to_original(low) == 7)
        got = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)
        np.testing.assert_allclose(got, t.to_original([[x1, y1, x2, y2]])[0], atol=4 * 400 / 64)


def test_mask_outside_a_centre_crop_is_unseen():
    t = Preprocessor([Resize(64, 64, mode="crop"), *RAW])(np.zeros((100, 200, 3), dtype=np.uint8)).transform
    back = t.mask_to_original(np.ones((64, 64), dtype=np.int32))
    assert back.shape == (100, 200)
    assert (back[:, :50] == -1).all() and (back[:, 150:] == -1).all() and (back[:, 50:150] == 1).all()


def test_mask_of_a_tensor_input_is_left_alone():
    t = Transform.identity()
    m = np.arange(12, dtype=np.int32).reshape(3, 4)
    assert t.mask_to_original(m) is m or np.array_equal(t.mask_to_original(m), m)
    with pytest.raises(InputError, match=r"\(H, W\) array"):
        t.mask_to_original(np.zeros((1, 3, 4)))


def test_segment_result_in_original_pixels_through_postprocess():
    from edgekit.postprocess import SegmentConfig, postprocess

    res = Preprocessor([Resize(32, 32, mode="letterbox"), *RAW])(np.zeros((120, 240, 3), dtype=np.uint8))
    scores = np.zeros((1, 2, 32, 32), dtype=np.float32)
    scores[0, 1, 8:24, 16:] = 5.0  # class 1 on the right half of the content
    r = postprocess(SegmentConfig(), {"o": scores}, transform=res.transform)
    assert r.mask.shape == (120, 240)
    assert (r.mask[:, :120] == 0).all() and (r.mask[:, 120:] == 1).all()
