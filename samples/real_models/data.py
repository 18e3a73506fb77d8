"""Real calibration / verification data for the real models, made from the fetched sample files.

Each kind returns what ``edgekit.build(calibration=...)`` takes: a folder of
images, or a mapping input name → stacked arrays.  The images are real
photographs and a scanned page (scikit-image's sample data); crops and flips
of them give the 32+ samples verification asks for.  The speech comes from
the WAV in ``samples/voice_activity/data``.
"""
from __future__ import annotations

import wave
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

try:
    from . import fetch as _fetch
except ImportError:  # imported as a top-level module (tests put this folder on sys.path)
    import fetch as _fetch  # type: ignore[no-redef]

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle")
SPEECH_WAV = Path(__file__).resolve().parent.parent / "voice_activity" / "data" / "speech_16k.wav"

#: silero VAD at 16 kHz: 512 new samples per window, preceded by the last 64 of the previous one
VAD_WINDOW = 512
VAD_CONTEXT = 64


def _crops(im: Image.Image) -> List[Image.Image]:
    w, h = im.size
    out = [im, im.transpose(Image.FLIP_LEFT_RIGHT)]
    for fx, fy in ((0, 0), (1, 0), (0, 1), (1, 1), (0.5, 0.5)):
        cw, ch = int(w * 0.7), int(h * 0.7)
        x0, y0 = int((w - cw) * fx), int((h - ch) * fy)
        out.append(im.crop((x0, y0, x0 + cw, y0 + ch)))
    return out


def photo_folder(dest: Path) -> Path:
    """Real photos and a scanned page, with crops and flips: 49 images."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = _fetch.fetch(list(PHOTOS) + ["page", "text"])
    for name in list(PHOTOS) + ["page", "text"]:
        with Image.open(paths[name]) as im:
            for i, crop in enumerate(_crops(im.convert("RGB"))):
                crop.save(dest / f"{name}_{i}.png")
    return dest


#: portraits the people scenes are made of: scikit-image's astronaut (Eileen Collins, NASA, public domain)
#: and matplotlib's grace_hopper.jpg (US Navy photo, public domain)
PORTRAITS = ("astronaut", "grace-hopper")
#: backgrounds of the people scenes (no people in them: their detections are false positives)
BACKGROUNDS = PHOTOS[1:]
#: scene size (a 4:3 frame, letterboxed to the detector's square input)
SCENE_W, SCENE_H = 640, 480
#: seeds of the two disjoint scene sets: calibration and held-out verification
CALIBRATION_SEED, HOLDOUT_SEED = 1, 2


def _background_crop(rng: np.random.Generator, backgrounds: Sequence[Image.Image], least: float,
                     size: Tuple[int, int]) -> Image.Image:
    """A random crop (``least``–100 % of each side, anywhere) of a random background, resized to ``size``."""
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    fw, fh = bg.size
    c = float(rng.uniform(least, 1.0))
    cw, ch = int(fw * c), int(fh * c)
    x0, y0 = int(rng.integers(0, fw - cw + 1)), int(rng.integers(0, fh - ch + 1))
    return bg.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.BILINEAR)


def _people_scene(rng: np.random.Generator, portraits: Sequence[Image.Image], backgrounds: Sequence[Image.Image],
                  index: int) -> Image.Image:
    """One scene: a background crop with 0–2 portraits side by side, each scaled, flipped and lit on its own.

    Every eighth scene has nobody in it.  A portrait's slot is one half of the
    frame, so faces do not cover one another, and a face is 40–120 pixels
    across at the detector's input: large enough that fp32 finds it with a
    clear score rather than on the edge of the confidence threshold.
    """
    # a random 80–100 % crop of the background, so scenes of the two sets never share a frame
    scene = _background_crop(rng, backgrounds, 0.8, (SCENE_W, SCENE_H))
    if rng.random() < 0.5:
        scene = scene.transpose(Image.FLIP_LEFT_RIGHT)
    people = 0 if index % 8 == 7 else int(rng.integers(1, 3))
    slots = rng.permutation(2)[:people]
    slot_w = SCENE_W // 2
    for slot in slots:
        fig = portraits[int(rng.integers(len(portraits)))]
        width = int(rng.uniform(0.55, 0.95) * slot_w)
        fig = fig.resize((width, int(width * fig.height / fig.width)), Image.BILINEAR)
        if rng.random() < 0.5:
            fig = fig.transpose(Image.FLIP_LEFT_RIGHT)
        gain = float(rng.uniform(0.75, 1.2))
        fig = Image.fromarray(np.clip(np.asarray(fig, np.float32) * gain, 0, 255).astype(np.uint8))
        x = int(slot) * slot_w + int(rng.integers(0, slot_w - fig.width + 1))
        y = int(rng.integers(0, max(1, SCENE_H - fig.height // 2)))
        scene.paste(fig, (x, y))  # the part below the frame is cut, as in a real photo
    return scene


def people_folder(dest: Path, count: int = 48, seed: int = CALIBRATION_SEED) -> Path:
    """Scenes with people for a face/person detector: up to two portraits (two real people, public-domain
    photos) at several scales, places, flips and exposures on the other photos; every eighth scene has nobody
    in it (false positives count too).  ``seed`` picks the set: :data:`CALIBRATION_SEED` for calibration,
    :data:`HOLDOUT_SEED` for the held-out scenes verification runs on (:func:`people_holdout_folder`)."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = _fetch.fetch(list(PORTRAITS) + list(BACKGROUNDS))
    portraits, backgrounds = [], []
    for name in PORTRAITS:
        with Image.open(paths[name]) as im:
            portraits.append(im.convert("RGB"))
    for name in BACKGROUNDS:
        with Image.open(paths[name]) as im:
            backgrounds.append(im.convert("RGB"))
    rng = np.random.default_rng(seed)
    for i in range(count):
        _people_scene(rng, portraits, backgrounds, i).save(dest / f"scene_{i:03d}.jpg", quality=90)
    return dest


def people_holdout_folder(dest: Path, count: int = 64) -> Path:
    """Held-out people scenes (another seed than calibration's): what a detector's int8 build is verified on.
    64 scenes give about 90 fp32 reference boxes on the YOLOv8n face/body detector of the suite."""
    return people_folder(dest, count=count, seed=HOLDOUT_SEED)


#: fonts of the glyph scenes: DejaVu Sans, Sans Bold and Serif from matplotlib's pinned wheel
GLYPH_FONTS = ("dejavu-sans", "dejavu-sans-bold", "dejavu-serif")
#: backgrounds of the glyph scenes (a click captcha draws its characters on a photo)
GLYPH_BACKGROUNDS = PHOTOS
#: Latin capitals and small letters that do not look alike, digits, Greek, Cyrillic and a few symbols
GLYPHS = "ABCDEFGHJKLMNPQRSTUVWXYZabdefghkmnqrtyz23456789ΔΣΦΨΩλπжЖЯ&@#%?"
#: glyph scene size: a wide click-captcha frame, letterboxed to the detector's square input
GLYPH_W, GLYPH_H = 344, 200


def _glyph_scene(rng: np.random.Generator, fonts: Sequence[Path], backgrounds: Sequence[Image.Image]) -> Image.Image:
    """One click-captcha-like scene: a photo crop with 3–5 characters, one per slot across the frame, each in
    a random font, size (26–43 px), colour, outline and rotation (±40°)."""
    from PIL import ImageDraw, ImageFont

    scene = _background_crop(rng, backgrounds, 0.5, (GLYPH_W, GLYPH_H))
    n = int(rng.integers(3, 6))
    slot = GLYPH_W // n
    for k in range(n):
        size = int(rng.integers(26, 44))
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), size)
        glyph = GLYPHS[int(rng.integers(len(GLYPHS)))]
        tile = Image.new("RGBA", (2 * size, 2 * size), (0, 0, 0, 0))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3)) + (255,)
        ImageDraw.Draw(tile).text((size // 2, size // 3), glyph, font=font, fill=colour,
                                  stroke_width=int(rng.integers(0, 2)), stroke_fill=(255, 255, 255, 255))
        tile = tile.rotate(float(rng.uniform(-40, 40)), resample=Image.BICUBIC)
        x = k * slot + int(rng.integers(0, max(1, slot - size))) - size // 3
        y = int(rng.integers(0, GLYPH_H - 2 * size))
        scene.paste(tile, (x, y), tile)
    return scene


def glyph_folder(dest: Path, count: int = 48, seed: int = CALIBRATION_SEED) -> Path:
    """Click-captcha-like scenes for a character detector: 3–5 characters (DejaVu fonts, Latin, Greek,
    Cyrillic, symbols) drawn on crops of the photos.  ``seed`` picks the set: :data:`CALIBRATION_SEED` for
    calibration, :data:`HOLDOUT_SEED` for the held-out scenes verification runs on."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = _fetch.fetch(list(GLYPH_FONTS) + list(GLYPH_BACKGROUNDS))
    fonts = [paths[name] for name in GLYPH_FONTS]
    backgrounds = []
    for name in GLYPH_BACKGROUNDS:
        with Image.open(paths[name]) as im:
            backgrounds.append(im.convert("RGB"))
    rng = np.random.default_rng(seed)
    for i in range(count):
        _glyph_scene(rng, fonts, backgrounds).save(dest / f"glyphs_{i:03d}.png")
    return dest


def glyph_holdout_folder(dest: Path, count: int = 32) -> Path:
    """Held-out glyph scenes (another seed than calibration's): 32 scenes give about 130 fp32 boxes on the
    suite's YOLOX character detector, well above the 20 the recall gate needs to judge."""
    return glyph_folder(dest, count=count, seed=HOLDOUT_SEED)


def page_folder(dest: Path) -> Path:
    """Scanned text (page.png, text.png) and its crops: what a text detector sees."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = _fetch.fetch(["page", "text"])
    for name in ("page", "text"):
        with Image.open(paths[name]) as im:
            rgb = im.convert("RGB")
            for i, crop in enumerate(_crops(rgb) + _crops(rgb.rotate(180))):
                crop.save(dest / f"{name}_{i}.png")
    return dest


def text_line_folder(dest: Path, count: int = 48) -> Path:
    """Horizontal strips of the scanned page (text lines, some rotated 180°): recognizer/classifier input."""
    dest.mkdir(parents=True, exist_ok=True)
    page = _fetch.fetch(["page"])["page"]
    with Image.open(page) as im:
        g = np.asarray(im.convert("L"))
    h, w = g.shape
    ink = (g < 128).mean(axis=1)
    rows = [y for y in range(10, h - 26) if ink[y + 8] > 0.02]
    rng = np.random.default_rng(0)
    picks = rng.choice(rows, size=min(count, len(rows)), replace=False) if rows else []
    for i, y in enumerate(sorted(int(p) for p in picks)):
        x0 = int(rng.integers(0, w // 4))
        strip = Image.fromarray(g[y:y + 24, x0:w]).convert("RGB")
        if i % 4 == 3:
            strip = strip.rotate(180)
        strip.save(dest / f"line_{i:02d}.png")
    return dest


def face_folder(dest: Path, count: int = 48) -> Path:
    """Faces of the LFW subset (25x25 grey, scikit-image) as RGB PNGs."""
    dest.mkdir(parents=True, exist_ok=True)
    faces = np.load(_fetch.fetch(["lfw-faces"])["lfw-faces"], allow_pickle=False)
    for i, face in enumerate(faces[:count]):
        g = np.clip(face * 255.0 if face.max() <= 1.0 else face, 0, 255).astype(np.uint8)
        Image.fromarray(g).convert("RGB").resize((48, 48), Image.BILINEAR).save(dest / f"face_{i:03d}.png")
    return dest


def read_wav(path: Path) -> np.ndarray:
    """Mono 16-bit PCM → float32 in [-1, 1]."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
        x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if w.getnchannels() > 1:
            x = x.reshape(-1, w.getnchannels()).mean(axis=1)
        return x


def vad_windows(audio: np.ndarray) -> np.ndarray:
    """[n, 576] rows: each 512-sample window with the 64 samples before it (zeros at the start)."""
    n = len(audio) // VAD_WINDOW
    padded = np.concatenate([np.zeros(VAD_CONTEXT, np.float32), audio[: n * VAD_WINDOW]])
    idx = np.arange(n)[:, None] * VAD_WINDOW + np.arange(VAD_WINDOW + VAD_CONTEXT)[None, :]
    return padded[idx].astype(np.float32)


def speech_feeds(rows: int = 32, shifts: Sequence[int] = (0, 128, 256, 384)) -> Dict[str, np.ndarray]:
    """Stacked feeds for the silero sequence model: ``rows`` windows per call, zero LSTM state."""
    audio = read_wav(SPEECH_WAV)
    chunks = []
    for s in shifts:
        win = vad_windows(audio[s:])
        for i in range(0, len(win) - rows + 1, rows):
            chunks.append(win[i:i + rows])
    x = np.stack(chunks)
    zeros = np.zeros((len(chunks), 1, 1, 128), np.float32)
    return {"input": x, "h": zeros, "c": zeros.copy()}
