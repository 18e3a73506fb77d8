"""edgekit.textdet: DB probability map → text boxes, and convex-quad IoU (device side, numpy only)."""
from __future__ import annotations

import math
from collections import deque
from typing import List, Tuple

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.textdet import TextBox, _cells_hull, decode_text_map, quad_iou

pytestmark = pytest.mark.device


def _grown(w: float, h: float, ratio: float = 1.5) -> float:
    """The unclip distance DB uses: area * ratio / perimeter."""
    return w * h * ratio / (2 * (w + h))


def _rotated_rect_map(shape: Tuple[int, int], centre: Tuple[float, float], w: float, h: float,
                      degrees: float) -> np.ndarray:
    """1.0 on pixels whose centre lies inside the rotated rectangle."""
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    a = math.radians(degrees)
    dx, dy = xs - centre[0], ys - centre[1]
    along = dx * math.cos(a) + dy * math.sin(a)
    across = -dx * math.sin(a) + dy * math.cos(a)
    return ((np.abs(along) <= w / 2) & (np.abs(across) <= h / 2)).astype(np.float32)


def _centre(box: TextBox) -> Tuple[float, float]:
    cx, cy = np.asarray(box.points).mean(axis=0)
    return float(cx), float(cy)


def _sides(box: TextBox) -> Tuple[float, float]:
    p = np.asarray(box.points)
    return float(np.linalg.norm(p[1] - p[0])), float(np.linalg.norm(p[2] - p[1]))


# ------------------------------------------------------------------ geometry


def test_axis_aligned_rectangle_grows_by_unclip_distance():
    prob = np.zeros((100, 200), dtype=np.float32)
    prob[10:30, 20:120] = 1.0  # 100 x 20 pixel cells: x in [20, 120], y in [10, 30]
    boxes = decode_text_map(prob)
    assert len(boxes) == 1
    d = _grown(100, 20)
    expected = ((20 - d, 10 - d), (120 + d, 10 - d), (120 + d, 30 + d), (20 - d, 30 + d))
    np.testing.assert_allclose(boxes[0].points, expected, atol=1e-9)
    assert boxes[0].score == pytest.approx(1.0)
    assert all(isinstance(c, float) for p in boxes[0].points for c in p)


def test_unclip_ratio_zero_gives_the_cell_rectangle():
    prob = np.zeros((50, 50))
    prob[5:12, 30:45] = 0.9
    (box,) = decode_text_map(prob, unclip_ratio=0.0)
    np.testing.assert_allclose(box.points, ((30, 5), (45, 5), (45, 12), (30, 12)), atol=1e-9)
    assert box.score == pytest.approx(0.9)


def test_rotated_rectangle_angle_and_sides():
    w, h, angle = 200.0, 40.0, 30.0
    prob = _rotated_rect_map((260, 320), (160.0, 130.0), w, h, angle)
    boxes = decode_text_map(prob)
    assert len(boxes) == 1
    p = np.asarray(boxes[0].points)
    sides = _sides(boxes[0])
    long_edge = p[1] - p[0] if sides[0] >= sides[1] else p[2] - p[1]
    got = math.degrees(math.atan2(long_edge[1], long_edge[0])) % 180
    assert abs(got - angle) < 2.0
    d = _grown(w, h)
    assert max(sides) == pytest.approx(w + 2 * d, abs=3)
    assert min(sides) == pytest.approx(h + 2 * d, abs=3)
    np.testing.assert_allclose(p.mean(axis=0), (160.0, 130.0), atol=1.0)


def test_points_are_clockwise_from_the_top_left_most_corner():
    prob = _rotated_rect_map((200, 200), (100.0, 100.0), 120.0, 30.0, -20.0)
    (box,) = decode_text_map(prob)
    p = np.asarray(box.points)
    shoelace = float(np.sum(p[:, 0] * np.roll(p[:, 1], -1) - np.roll(p[:, 0], -1) * p[:, 1]))
    assert shoelace > 0  # y down: positive means clockwise on screen
    sums = p.sum(axis=1)
    assert int(np.argmin(sums)) == 0


def test_cells_hull_matches_brute_force_hull_of_all_cell_corners():
    rng = np.random.default_rng(3)
    for _ in range(20):
        rows = int(rng.integers(1, 12))
        left = rng.integers(0, 10, size=rows)
        right = left + rng.integers(1, 10, size=rows)
        hull = _cells_hull(4, left, right)
        corners = set()
        for i in range(rows):
            for x in (left[i], right[i]):
                corners |= {(int(x), 4 + i), (int(x), 5 + i)}
        assert {tuple(map(int, v)) for v in hull} == _brute_hull(sorted(corners))


def _brute_hull(pts: List[Tuple[int, int]]) -> set:
    """Strict hull vertices by the textbook x-sorted monotone chain over every cell corner."""
    def half(points):
        chain: List[Tuple[int, int]] = []
        for p in points:
            while len(chain) >= 2 and ((chain[-1][0] - chain[-2][0]) * (p[1] - chain[-2][1])
                                       - (chain[-1][1] - chain[-2][1]) * (p[0] - chain[-2][0])) <= 0:
                chain.pop()
            chain.append(p)
        return chain
    return set(half(pts)) | set(half(pts[::-1]))


# ---------------------------------------------------------------- components


def test_diagonal_touch_is_one_component_and_one_pixel_gap_is_two():
    prob = np.zeros((60, 60), dtype=np.float32)
    prob[10:20, 10:20] = 1.0
    prob[20:30, 20:30] = 1.0  # pixel (19, 19) touches (20, 20) only at a corner
    assert len(decode_text_map(prob)) == 1
    prob = np.zeros((60, 60), dtype=np.float32)
    prob[10:20, 10:20] = 1.0
    prob[10:20, 21:31] = 1.0  # column 20 is empty
    assert len(decode_text_map(prob)) == 2
    prob = np.zeros((60, 60), dtype=np.float32)
    prob[10:20, 10:20] = 1.0
    prob[21:31, 21:31] = 1.0  # diagonal gap of one pixel
    assert len(decode_text_map(prob)) == 2


def _bfs_components(mask: np.ndarray) -> List[List[Tuple[int, int]]]:
    h, w = mask.shape
    seen = np.zeros_like(mask)
    comps = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, comp = deque([(y0, x0)]), []
        while queue:
            y, x = queue.popleft()
            comp.append((y, x))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        comps.append(comp)
    return comps


@pytest.mark.parametrize("seed, shape, empty", [(0, (24, 31), 0.55), (1, (24, 31), 0.55), (2, (24, 31), 0.7),
                                                 (3, (1, 40), 0.5), (4, (40, 1), 0.5), (5, (60, 60), 0.6),
                                                 (6, (60, 60), 0.62), (7, (60, 60), 0.3)])
def test_components_match_a_breadth_first_labelling(seed, shape, empty):
    """Near 8-connected percolation (about 0.59 empty) the components wind and merge late."""
    rng = np.random.default_rng(seed)
    prob = rng.random(shape)
    prob[rng.random(prob.shape) < empty] = 0.0
    comps = _bfs_components(prob > 0.3)
    # ratio 2 grows even a single 1x1 cell to 2x2, so with min_size 0 every component makes a box
    boxes = decode_text_map(prob, box_threshold=0.0, min_size=0, unclip_ratio=2.0)
    assert len(boxes) == len(comps)
    expected = sorted(float(np.mean([prob[y, x] for y, x in c])) for c in comps)
    np.testing.assert_allclose(sorted(b.score for b in boxes), expected, rtol=1e-12)


def test_many_components_on_a_full_size_map():
    prob = np.zeros((640, 640), dtype=np.float32)
    for i in range(10):
        for j in range(10):
            prob[i * 64 + 5:i * 64 + 25, j * 64 + 3:j * 64 + 50] = 0.9
    boxes = decode_text_map(prob)
    assert len(boxes) == 100
    tops = [min(p[1] for p in b.points) for b in boxes]
    lefts = [min(p[0] for p in b.points) for b in boxes]
    assert list(zip(tops, lefts)) == sorted(zip(tops, lefts))
    assert lefts[:3] == sorted(lefts[:3]) and tops[0] == tops[9] < tops[10]


# ------------------------------------------------------------------- filters


def test_box_threshold_drops_low_mean_and_keeps_high_mean():
    prob = np.zeros((40, 80))
    prob[5:15, 5:35] = 0.5
    prob[5:15, 45:75] = 0.7
    boxes = decode_text_map(prob, box_threshold=0.6)
    assert len(boxes) == 1 and boxes[0].score == pytest.approx(0.7)
    assert _centre(boxes[0]) == pytest.approx((60.0, 10.0))
    assert len(decode_text_map(prob, box_threshold=0.4)) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_pixel_equal_to_threshold_is_background(dtype):
    prob = np.zeros((30, 30), dtype=dtype)
    prob[5:20, 5:20] = 0.3
    assert decode_text_map(prob, threshold=0.3, box_threshold=0.0) == []
    above = np.nextafter(dtype(0.3), dtype(1.0))
    prob[5:20, 5:20] = above
    assert len(decode_text_map(prob, threshold=0.3, box_threshold=0.0)) == 1


def test_min_size_drops_thin_lines():
    prob = np.zeros((40, 120))
    prob[10:12, 10:110] = 1.0  # 100 x 2 line
    assert decode_text_map(prob, min_size=3) == []
    (box,) = decode_text_map(prob, min_size=2)
    assert min(_sides(box)) == pytest.approx(2 + 2 * _grown(100, 2))


def test_max_candidates_keeps_the_largest():
    prob = np.zeros((60, 100))
    prob[5:10, 5:15] = 1.0  # small, first in raster order
    prob[20:40, 20:90] = 1.0  # large
    prob[45:55, 5:25] = 1.0  # medium
    (box,) = decode_text_map(prob, max_candidates=1)
    assert _centre(box) == pytest.approx((55.0, 30.0))
    two = decode_text_map(prob, max_candidates=2)
    assert [_centre(b) for b in two] == [pytest.approx((55.0, 30.0)), pytest.approx((15.0, 50.0))]
    assert decode_text_map(prob, max_candidates=0) == []
    assert len(decode_text_map(prob)) == 3


def test_max_candidates_tie_goes_to_the_first_in_raster_order():
    prob = np.zeros((40, 60))
    prob[20:30, 5:25] = 1.0
    prob[5:15, 35:55] = 1.0  # same size, starts on an earlier row
    (box,) = decode_text_map(prob, max_candidates=1)
    assert _centre(box) == pytest.approx((45.0, 10.0))


def test_empty_maps():
    assert decode_text_map(np.zeros((0, 5))) == []
    assert decode_text_map(np.zeros((8, 8))) == []


# -------------------------------------------------------------------- shapes


def test_leading_ones_are_squeezed():
    prob = np.zeros((32, 48), dtype=np.float32)
    prob[4:20, 8:40] = 1.0
    flat = decode_text_map(prob)
    assert decode_text_map(prob[None]) == flat
    assert decode_text_map(prob[None, None]) == flat


@pytest.mark.parametrize("shape", [(2, 16, 16), (1, 3, 16, 16), (16,)])
def test_other_shapes_raise_with_the_shape(shape):
    with pytest.raises(ValueError, match=str(shape).replace("(", r"\(").replace(")", r"\)")):
        decode_text_map(np.zeros(shape))


def test_bad_parameters_raise():
    with pytest.raises(InputError, match="threshold"):
        decode_text_map(np.zeros((4, 4)), threshold=float("nan"))
    with pytest.raises(InputError, match="max_candidates"):
        decode_text_map(np.zeros((4, 4)), max_candidates=-1)


# ----------------------------------------------------------------------- IoU


def _square(x0: float, y0: float, s: float) -> np.ndarray:
    return np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]], dtype=np.float64)


def test_quad_iou_basic_values():
    a = _square(0, 0, 2)
    quads = np.stack([a, _square(1, 0, 2), _square(5, 5, 2), a[::-1]])
    iou = quad_iou(a[None], quads)
    assert iou.shape == (1, 4) and iou.dtype == np.float64
    np.testing.assert_allclose(iou[0], [1.0, 1.0 / 3.0, 0.0, 1.0], atol=1e-12)


def test_quad_iou_rotated_square_vs_its_axis_aligned_bound():
    theta = math.radians(30)
    s = 10.0
    c, si = math.cos(theta), math.sin(theta)
    corners = np.array([[-s / 2, -s / 2], [s / 2, -s / 2], [s / 2, s / 2], [-s / 2, s / 2]])
    rotated = corners @ np.array([[c, si], [-si, c]])
    bound = np.array([[rotated[:, 0].min(), rotated[:, 1].min()], [rotated[:, 0].max(), rotated[:, 1].min()],
                      [rotated[:, 0].max(), rotated[:, 1].max()], [rotated[:, 0].min(), rotated[:, 1].max()]])
    # the bound has side s (cos + sin), the square sits inside it: IoU = 1 / (cos + sin)^2 = 1 / (1 + sin 2θ)
    expected = 1.0 / (1.0 + math.sin(2 * theta))
    np.testing.assert_allclose(quad_iou(rotated[None], bound[None]), [[expected]], rtol=1e-12)
    np.testing.assert_allclose(quad_iou(bound[None], rotated[None]), [[expected]], rtol=1e-12)


def test_quad_iou_matches_sampling_for_random_rotated_rectangles():
    rng = np.random.default_rng(7)
    quads = []
    for _ in range(6):
        cx, cy = rng.uniform(3, 7, size=2)
        w, h = rng.uniform(1, 5, size=2)
        a = rng.uniform(0, math.pi)
        u, v = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        quads.append([(cx, cy) + su * w / 2 * u + sv * h / 2 * v for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))])
    q = np.asarray(quads)
    iou = quad_iou(q, q)
    ys, xs = np.mgrid[0:400, 0:400] * 0.025 + 0.0125
    inside = []
    for quad in q:
        edge = np.roll(quad, -1, axis=0) - quad
        ex, ey = edge[:, 0, None, None], edge[:, 1, None, None]
        cross = ex * (ys - quad[:, 1, None, None]) - ey * (xs - quad[:, 0, None, None])
        inside.append(np.all(cross >= 0, axis=0) | np.all(cross <= 0, axis=0))
    for i in range(len(q)):
        for j in range(len(q)):
            union = np.sum(inside[i] | inside[j])
            sampled = np.sum(inside[i] & inside[j]) / union
            assert iou[i, j] == pytest.approx(sampled, abs=0.02)
    np.testing.assert_allclose(np.diag(iou), 1.0, atol=1e-12)
    np.testing.assert_allclose(iou, iou.T, atol=1e-12)


def test_quad_iou_empty_degenerate_and_bad_shape():
    a = _square(0, 0, 1)
    assert quad_iou(np.zeros((0, 4, 2)), a[None]).shape == (0, 1)
    flat = np.zeros((1, 4, 2))
    assert quad_iou(flat, flat)[0, 0] == 0.0
    with pytest.raises(ValueError, match="4, 2"):
        quad_iou(np.zeros((1, 3, 2)), a[None])
