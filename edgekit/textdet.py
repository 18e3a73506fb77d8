"""DB text detection: probability map → rotated text boxes, numpy only.

A DB-style detector (PP-OCR det, DBNet) outputs one sigmoid channel the size
of its input, near 1 on text.  Deployments turn it into boxes with OpenCV
(``findContours``, ``minAreaRect``) and pyclipper (``unclip``); a device
runtime has neither, so this module does the same steps with numpy:

1. binarize (``prob > threshold``);
2. 8-connected components, found as horizontal runs joined across rows;
3. per component the minimum-area rectangle around its pixel *cells*
   (pixel ``(x, y)`` covers ``[x, x+1] × [y, y+1]``), dropped when thin;
4. score = mean probability over the component's pixels, dropped when low;
5. unclip: every side pushed out by ``area * unclip_ratio / perimeter``,
   the offset DB's training shrank the text regions by.

Coordinates are map pixels; mapping back to the original image is the
caller's job (as for :mod:`edgekit.postprocess` boxes).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .errors import InputError

__all__ = ["TextBox", "decode_text_map", "quad_iou"]


@dataclass(frozen=True)
class TextBox:
    """One detected text region.

    ``points`` are the 4 corners in map pixels, clockwise on screen (y down),
    starting at the corner with the smallest ``x + y`` (ties: smaller y), so
    an upright box reads top-left, top-right, bottom-right, bottom-left.
    ``score`` is the mean probability over the component's pixels.
    """

    points: Tuple[Tuple[float, float], ...]
    score: float


# --------------------------------------------------------------------------- input


def _as_map(prob: np.ndarray) -> np.ndarray:
    """Squeeze leading 1s to (H, W); a batch or channel count > 1 is ambiguous, so refuse it."""
    arr = np.asarray(prob)
    shape = arr.shape
    while arr.ndim > 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise InputError(
            f"text probability map must be (H, W), (1, H, W) or (1, 1, H, W), but got shape {tuple(shape)}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _check_params(threshold: float, box_threshold: float, unclip_ratio: float, min_size: int,
                  max_candidates: int) -> None:
    """Refuse values that would silently return nothing or garbage (NaN thresholds compare False)."""
    for name, value in (("threshold", threshold), ("box_threshold", box_threshold)):
        if not math.isfinite(value):
            raise InputError(f'"{name}" must be a finite number, but got {value!r}')
    if not (math.isfinite(unclip_ratio) and unclip_ratio >= 0):
        raise InputError(f'"unclip_ratio" must be a finite number >= 0, but got {unclip_ratio!r}')
    if min_size < 0:
        raise InputError(f'"min_size" must be >= 0, but got {min_size!r}')
    if max_candidates < 0:
        raise InputError(f'"max_candidates" must be >= 0, but got {max_candidates!r}')


# ------------------------------------------------------------------ components


def _runs(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: (row, start, end) with end exclusive, in raster order.

    Padding a False column each side makes every run begin with a +1 step and
    end with a -1 step, so the two nonzero lists pair up one to one.
    """
    h, w = mask.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _run_sums(arr: np.ndarray, rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Sum of the map over each run, in float64, touching only the runs' pixels.

    ``reduceat`` over the flat map with the boundaries [s0, e0, s1, e1, ...]
    sums each [s_i, e_i) at the even slots; the odd slots (gaps) are unused.
    A trailing zero keeps an end at the very last pixel a valid index.
    """
    w = arr.shape[1]
    flat = np.concatenate([arr.reshape(-1), np.zeros(1, dtype=arr.dtype)])
    bounds = np.stack([rows * w + starts, rows * w + ends], axis=1).reshape(-1)
    return np.add.reduceat(flat, bounds, dtype=np.float64)[::2]


def _touching_pairs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs (upper, lower) of runs in consecutive rows that touch, diagonals included.

    Runs [s, e) in row r-1 and [s', e') in row r are 8-connected when
    s <= e' and s' <= e.  Keying runs by ``row * stride + column`` keeps them
    sorted across rows, so the upper runs touching a lower run form one
    contiguous slice found with two searchsorted calls.
    """
    stride = width + 2
    key_start = rows * stride + starts
    key_end = rows * stride + ends
    above = (rows - 1) * stride
    lo = np.searchsorted(key_end, above + starts, side="left")
    hi = np.searchsorted(key_start, above + ends, side="right")
    count = np.maximum(hi - lo, 0)
    lower = np.repeat(np.arange(rows.size), count)
    # position inside each lower run's slice: a global arange minus the slice's first output index
    first = np.repeat(np.cumsum(count) - count, count)
    upper = np.repeat(lo, count) + (np.arange(lower.size) - first)
    return upper, lower


def _union_roots(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected-component root (smallest member index) of each of n nodes, vectorised.

    Hook-and-compress: every root joined by an edge to a smaller root is hooked
    under the smallest such root, then pointers are jumped until each node
    points at its root.  Roots only ever point to smaller indices, so no cycle
    forms, and each round merges every root that still has a smaller neighbour.
    """
    parent = np.arange(n)
    while a.size:
        pa, pb = parent[a], parent[b]
        small, big = np.minimum(pa, pb), np.maximum(pa, pb)
        apart = small != big
        if not apart.any():
            break
        np.minimum.at(parent, big[apart], small[apart])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    return parent


# -------------------------------------------------------------------- geometry


def _convex_chain(xs: List[int], ys: List[int], bulge: int) -> List[Tuple[int, int]]:
    """One side of a monotone-chain hull over points already sorted by strictly increasing y.

    ``bulge`` is -1 for the left side (keep a middle point only if it sticks
    out towards smaller x) and +1 for the right side.  Coordinates are integer
    cell corners, so the cross products are exact and collinear points go.
    """
    chain: List[Tuple[int, int]] = []
    for p in zip(xs, ys):
        while len(chain) >= 2:
            (ox, oy), (ax, ay) = chain[-2], chain[-1]
            cross = (ax - ox) * (p[1] - oy) - (ay - oy) * (p[0] - ox)
            if cross * bulge > 0:
                break
            chain.pop()
        chain.append(p)
    return chain


def _cells_hull(top: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Convex hull of the pixel cells of a component spanning rows top .. top+len(left)-1.

    ``left[i]`` / ``right[i]`` are the row's leftmost start and rightmost
    (exclusive) end.  Only those can be on the hull; at each corner height y
    the outer one of the rows above and below is taken, so each side is one
    point per height, sorted by y: Andrew's monotone chain with y as the
    monotone axis, run once per side.  Points in the middle of a straight
    vertical edge are dropped first, which makes upright text nearly free.
    """
    lx = np.minimum(np.concatenate([left[:1], left]), np.concatenate([left, left[-1:]]))
    rx = np.maximum(np.concatenate([right[:1], right]), np.concatenate([right, right[-1:]]))
    ys = np.arange(top, top + lx.size)
    sides = []
    for xs, bulge in ((lx, -1), (rx, 1)):
        inner = np.zeros(xs.size, dtype=bool)
        inner[1:-1] = (xs[1:-1] == xs[:-2]) & (xs[1:-1] == xs[2:])
        sides.append(_convex_chain(xs[~inner].tolist(), ys[~inner].tolist(), bulge))
    # down the left side, then back up the right side
    return np.asarray(sides[0] + sides[1][::-1], dtype=np.float64)


def _min_area_rect(hull: np.ndarray) -> Tuple[np.ndarray, np.ndarray, float, float]:
    """Smallest rectangle around a convex hull: (centre, unit direction u, size along u, size across).

    The optimal rectangle has a side on one hull edge, so trying every edge
    direction and projecting the hull onto it and its normal is exact.
    """
    edges = np.concatenate([hull[1:], hull[:1]]) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    u = edges[keep] / lengths[keep, None]
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)
    pu = hull @ u.T  # (points, directions)
    pv = hull @ v.T
    span_u = pu.max(axis=0) - pu.min(axis=0)
    span_v = pv.max(axis=0) - pv.min(axis=0)
    best = int(np.argmin(span_u * span_v))
    mid_u = (pu[:, best].max() + pu[:, best].min()) / 2
    mid_v = (pv[:, best].max() + pv[:, best].min()) / 2
    centre = mid_u * u[best] + mid_v * v[best]
    return centre, u[best], float(span_u[best]), float(span_v[best])


def _ordered_corners(centre: np.ndarray, u: np.ndarray, w: float, h: float) -> Tuple[Tuple[float, float], ...]:
    """The rectangle's corners clockwise on screen (y down), from the smallest x + y (ties: smaller y)."""
    cx, cy = float(centre[0]), float(centre[1])
    ux, uy = float(u[0]) * w / 2, float(u[1]) * w / 2
    vx, vy = -float(u[1]) * h / 2, float(u[0]) * h / 2
    corners = [(cx + su * ux + sv * vx, cy + su * uy + sv * vy) for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    # with y down, a positive shoelace sum means clockwise as seen on screen
    if sum(corners[i][0] * corners[i - 3][1] - corners[i - 3][0] * corners[i][1] for i in range(4)) < 0:
        corners.reverse()
    first = min(range(4), key=lambda i: (corners[i][0] + corners[i][1], corners[i][1]))
    return tuple(corners[first:] + corners[:first])


# ---------------------------------------------------------------------- decode


def decode_text_map(prob: np.ndarray, *, threshold: float = 0.3, box_threshold: float = 0.6,
                    unclip_ratio: float = 1.5, min_size: int = 3, max_candidates: int = 1000) -> List[TextBox]:
    """Text boxes from a DB probability map, sorted by min y, then min x.

    ``prob`` is (H, W), or (1, H, W) / (1, 1, H, W); anything else raises
    :class:`~edgekit.errors.InputError` (a ``ValueError``) naming the shape.
    The threshold is cast to the map's dtype before comparing, so a float32
    pixel holding ``0.3`` is background at ``threshold=0.3`` (a float64
    comparison would see float32(0.3) > 0.3 and call it text).  Only the
    ``max_candidates`` largest components by pixel count (ties: first in
    raster order) are measured, which bounds the time a noisy map can take;
    DB deployments cap the count too but keep the first contours found, and
    largest-first keeps a speckled map's noise from crowding out the text.
    """
    _check_params(threshold, box_threshold, unclip_ratio, min_size, max_candidates)
    arr = _as_map(prob)
    h, w = arr.shape
    if h == 0 or w == 0 or max_candidates == 0:
        return []
    rows, starts, ends = _runs(arr > arr.dtype.type(threshold))
    if rows.size == 0:
        return []
    upper, lower = _touching_pairs(rows, starts, ends, w)
    roots = _union_roots(rows.size, upper, lower)
    # the root is the component's first run in raster order: its rank is the position tie-break
    root_ids, label = np.unique(roots, return_inverse=True)
    label = label.reshape(-1)
    lengths = (ends - starts).astype(np.float64)
    pixels = np.bincount(label, weights=lengths, minlength=root_ids.size)
    sums = np.bincount(label, weights=_run_sums(arr, rows, starts, ends), minlength=root_ids.size)
    order = np.lexsort((root_ids, -pixels))[:max_candidates]

    by_label = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[by_label], np.arange(root_ids.size + 1))
    boxes: List[TextBox] = []
    for comp in order.tolist():
        score = float(sums[comp] / pixels[comp])
        if score < box_threshold:
            continue
        runs = by_label[bounds[comp]:bounds[comp + 1]]
        box = _box_for_runs(rows[runs], starts[runs], ends[runs], unclip_ratio, min_size)
        if box is not None:
            boxes.append(TextBox(points=box, score=score))
    boxes.sort(key=lambda b: (min(p[1] for p in b.points), min(p[0] for p in b.points)))
    return boxes


def _box_for_runs(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, unclip_ratio: float,
                  min_size: int) -> Optional[Tuple[Tuple[float, float], ...]]:
    """Unclipped minimum-area rectangle of one component's runs, or None when too thin.

    An 8-connected component covers a contiguous range of rows, which
    :func:`_cells_hull` relies on.
    """
    uniq, first = np.unique(rows, return_index=True)
    hull = _cells_hull(int(uniq[0]), np.minimum.reduceat(starts, first), np.maximum.reduceat(ends, first))
    centre, u, rw, rh = _min_area_rect(hull)
    if min(rw, rh) < min_size:
        return None
    d = rw * rh * unclip_ratio / (2 * (rw + rh))
    rw, rh = rw + 2 * d, rh + 2 * d
    if min(rw, rh) < min_size + 2:
        return None
    return _ordered_corners(centre, u, rw, rh)


# ------------------------------------------------------------------------- IoU


def _shoelace(poly: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Signed areas of padded polygons (P, K, 2) whose first count[p] vertices are real."""
    k = poly.shape[1]
    idx = np.arange(k)
    valid = idx < count[:, None]
    nxt = np.where(idx + 1 < count[:, None], idx + 1, 0)
    q = np.take_along_axis(poly, nxt[:, :, None], axis=1)
    terms = poly[:, :, 0] * q[:, :, 1] - q[:, :, 0] * poly[:, :, 1]
    return np.where(valid, terms, 0.0).sum(axis=1) / 2


def _clip_convex(subject: np.ndarray, clip: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Sutherland–Hodgman of P subject quads by P convex clip quads (both positive area), all pairs at once.

    Polygons are padded arrays with a vertex count; each half-plane step emits,
    per subject edge P→Q, the crossing point (if P and Q lie on different
    sides) and then Q (if inside), which is the classic rule in slot order.
    A convex quad cut by 4 half-planes has at most 8 vertices.
    """
    poly = subject
    count = np.full(poly.shape[0], poly.shape[1])
    for j in range(clip.shape[1]):
        a = clip[:, j][:, None, :]
        edge = clip[:, (j + 1) % clip.shape[1]][:, None, :] - a
        k = poly.shape[1]
        idx = np.arange(k)
        valid = idx < count[:, None]
        nxt = np.where(idx + 1 < count[:, None], idx + 1, 0)
        q = np.take_along_axis(poly, nxt[:, :, None], axis=1)
        side_p = edge[..., 0] * (poly[..., 1] - a[..., 1]) - edge[..., 1] * (poly[..., 0] - a[..., 0])
        side_q = np.take_along_axis(side_p, nxt, axis=1)
        in_p, in_q = side_p >= 0, side_q >= 0
        crossing = valid & (in_p != in_q)
        denom = np.where(crossing, side_p - side_q, 1.0)
        t = np.where(crossing, side_p / denom, 0.0)[..., None]
        hit = poly + t * (q - poly)
        out = np.stack([hit, q], axis=2).reshape(poly.shape[0], 2 * k, 2)
        keep = np.stack([crossing, valid & in_q], axis=2).reshape(poly.shape[0], 2 * k)
        count = keep.sum(axis=1)
        pack = np.argsort(~keep, axis=1, kind="stable")
        width = max(int(count.max(initial=0)), 1)
        poly = np.take_along_axis(out, pack[:, :width, None], axis=1)
    return poly, count


def _as_quads(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[1:] != (4, 2):
        raise InputError(f'"{name}" must have shape (N, 4, 2), but got {arr.shape}')
    return arr


def quad_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of convex quadrilaterals: a (N, 4, 2), b (M, 4, 2) → (N, M) float64.

    Exact intersection by convex clipping, either winding accepted; 0 where
    the union is empty (degenerate quads).  Pairs whose bounding boxes do not
    meet are skipped, so sparse scenes cost little beyond the N×M output.
    """
    qa, qb = _as_quads(a, "a"), _as_quads(b, "b")
    n, m = qa.shape[0], qb.shape[0]
    result = np.zeros((n, m), dtype=np.float64)
    if n == 0 or m == 0:
        return result
    four = np.full(1, 4)
    area_a = _shoelace(qa, np.broadcast_to(four, (n,)))
    area_b = _shoelace(qb, np.broadcast_to(four, (m,)))
    # clipping keeps the half-plane on the left of each edge, which needs positive winding
    qa = np.where((area_a < 0)[:, None, None], qa[:, ::-1], qa)
    qb = np.where((area_b < 0)[:, None, None], qb[:, ::-1], qb)
    area_a, area_b = np.abs(area_a), np.abs(area_b)
    lo_a, hi_a = qa.min(axis=1), qa.max(axis=1)
    lo_b, hi_b = qb.min(axis=1), qb.max(axis=1)
    meets = np.all((lo_a[:, None] <= hi_b[None]) & (lo_b[None] <= hi_a[:, None]), axis=2)
    ia, ib = np.nonzero(meets)
    if ia.size:
        poly, count = _clip_convex(qa[ia], qb[ib])
        inter = np.abs(_shoelace(poly, count))
        union = area_a[ia] + area_b[ib] - inter
        ok = union > 0
        iou = np.zeros(ia.size)
        iou[ok] = inter[ok] / union[ok]
        result[ia, ib] = np.clip(iou, 0.0, 1.0)
    return result
