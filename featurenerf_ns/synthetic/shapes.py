"""Parametric mesh families standing in for the six ShapeNet categories.

Every instance is a union of *convex* pieces (boxes, prisms, cylinders, frusta, capsules,
ellipsoids, convex hulls of swept outlines), each carrying one part label. Convexity makes two
things exact and cheap: whether a point lies inside another piece (used to keep only points on the
outer surface) and snapping a keypoint onto its piece's surface.

Canonical frame (shared by all categories, like ShapeNet's):

- ``+Y`` is up, the object's front faces ``+Z``, its *left* is ``+X`` (a rider or sitter facing
  ``+Z`` has ``+X`` on the left hand), so keypoint ``*_left`` ids always lie on the ``+X`` side.
- The object is centred on the centre of its axis-aligned bounding box and scaled uniformly so the
  longest bounding-box edge is :data:`LONGEST_EDGE` (0.6), reduced further only if the bounding
  sphere would exceed :data:`MAX_RADIUS` (0.42). With the authors' camera (distance 1.3,
  ``camera_angle_x`` 0.6911) a sphere of radius 0.44 just fits the frame from every direction, and
  near/far 0.8/1.8 bracket it.

Part labels are ``1 + index`` into :attr:`featurenerf_ns.categories.Category.parts`; keypoint ids
index :data:`KEYPOINT_NAMES` of the category and mean the same thing on every instance (an instance
without a structure, e.g. a chair without arms, simply lacks those ids).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import trimesh

from featurenerf_ns.categories import CATEGORIES, Category

LONGEST_EDGE = 0.6
"""Length of the longest bounding-box edge of every normalised object."""
MAX_RADIUS = 0.42
"""Upper bound on the distance of any vertex from the bounding-box centre after normalisation."""

KEYPOINT_NAMES: dict[str, tuple[str, ...]] = {
    "chair": (
        "seat_front_left", "seat_front_right", "seat_back_left", "seat_back_right",
        "back_top_left", "back_top_right",
        "leg_front_left", "leg_front_right", "leg_back_left", "leg_back_right",
        "base_front", "arm_front_left", "arm_front_right",
    ),
    "table": (
        "top_front_left", "top_front_right", "top_back_left", "top_back_right",
        "top_front", "top_back", "top_left", "top_right", "top_center",
        "leg_front_left", "leg_front_right", "leg_back_left", "leg_back_right", "base_front",
    ),
    "airplane": (
        "nose", "tail_end", "cockpit", "wing_tip_left", "wing_tip_right", "wing_front_left",
        "wing_front_right", "htail_tip_left", "htail_tip_right", "vtail_top",
        "engine_inner_left", "engine_inner_right", "engine_outer_left", "engine_outer_right",
    ),
    "car": (
        "wheel_front_left", "wheel_front_right", "wheel_back_left", "wheel_back_right",
        "roof_front_left", "roof_front_right", "roof_back_left", "roof_back_right",
        "hood_front_left", "hood_front_right", "headlight_left", "headlight_right",
        "taillight_left", "taillight_right", "bumper_front", "bumper_rear",
    ),
    "bottle": (
        "lid_top", "mouth", "neck_front", "shoulder_front", "shoulder_back", "shoulder_left",
        "shoulder_right", "base_front", "base_back", "base_left", "base_right", "body_front",
    ),
    "motorcycle": (
        "front_wheel_left", "front_wheel_right", "rear_wheel_left", "rear_wheel_right",
        "front_wheel_top", "rear_wheel_top", "handle_left", "handle_right", "headlight",
        "seat_front", "seat_rear", "tank_top", "tail_end",
    ),
}  # fmt: skip
"""Keypoint names per category; a keypoint id is the index into this tuple."""


# --------------------------------------------------------------------------------------------
# Texture


@dataclass(frozen=True)
class Texture:
    """Per-instance appearance: a colour per part plus a procedural pattern in canonical space.

    Part colours are drawn per instance (sometimes one colour for the whole object) and a pattern
    mixes in a second colour, so RGB alone does not identify parts across instances.
    """

    part_colors: np.ndarray
    """(P+1, 3) base albedo per part label (row 0 unused)."""
    alt_colors: np.ndarray
    """(P+1, 3) second albedo per part label, mixed in by the pattern."""
    pattern: str
    """``plain``, ``stripes``, ``checker`` or ``noise``."""
    strength: float
    """Mixing weight of the pattern in [0, 1]."""
    waves: np.ndarray
    """(M, 3) spatial frequency vectors (radians per unit of canonical space)."""
    phases: np.ndarray
    """(M,) phases of the waves."""

    def albedo(self, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Albedo in [0, 1], (N, 3), of canonical surface ``points`` (N, 3) with part ``labels`` (N,)."""
        points = np.asarray(points, dtype=np.float64)
        s = np.sin(points @ self.waves.T + self.phases)  # (N, M)
        if self.pattern == "stripes":
            m = (s[:, 0] > 0).astype(np.float64)
        elif self.pattern == "checker":
            m = (np.prod(np.sign(s[:, :3]), axis=1) > 0).astype(np.float64)
        elif self.pattern == "noise":
            m = 0.5 + 0.5 * s.mean(axis=1) * np.sqrt(s.shape[1]) / 1.5
        else:
            m = np.zeros(len(points))
        m = np.clip(m, 0.0, 1.0)[:, None] * self.strength
        return (1.0 - m) * self.part_colors[labels] + m * self.alt_colors[labels]


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack([np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table[i, np.arange(len(h))]


def random_texture(rng: np.random.Generator, num_parts: int) -> Texture:
    """Draw an instance texture for an object with ``num_parts`` part labels."""
    n = num_parts + 1
    h, s, v = rng.uniform(0, 1, n), rng.uniform(0.2, 0.9, n), rng.uniform(0.45, 1.0, n)
    if rng.uniform() < 0.3:  # one colour for the whole object: parts must be told apart by shape
        h[:], s[:], v[:] = h[1], s[1], v[1]
    base = _hsv_to_rgb(h, s, v)
    alt = _hsv_to_rgb((h + rng.uniform(0.2, 0.8)) % 1.0, rng.uniform(0.1, 0.9, n), rng.uniform(0.3, 1.0, n))
    pattern = str(rng.choice(["plain", "stripes", "checker", "noise"], p=[0.2, 0.3, 0.25, 0.25]))
    m = 6
    dirs = rng.normal(size=(m, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    if pattern == "checker":
        dirs[:3] = np.eye(3)
    freq = rng.uniform(12.0, 40.0) if pattern != "noise" else rng.uniform(8.0, 25.0)
    return Texture(base, alt, pattern, float(rng.uniform(0.35, 0.8)), dirs * freq, rng.uniform(0, 2 * np.pi, m))


# --------------------------------------------------------------------------------------------
# Convex primitives (all return watertight convex meshes with outward normals)


def _hull(points: np.ndarray) -> trimesh.Trimesh:
    return trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))


def _basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    axis = axis / np.linalg.norm(axis)
    ref = np.array([0.0, 1.0, 0.0]) if abs(axis[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(axis, ref)
    u /= np.linalg.norm(u)
    return u, np.cross(axis, u)


def _ring(center, axis, radius, n: int, scale=(1.0, 1.0), angle0: float = 0.0) -> np.ndarray:
    u, v = _basis(np.asarray(axis, dtype=np.float64))
    a = angle0 + np.arange(n) * 2 * np.pi / n
    return np.asarray(center, float) + radius * (scale[0] * np.cos(a)[:, None] * u + scale[1] * np.sin(a)[:, None] * v)


def box(lo, hi) -> trimesh.Trimesh:
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return trimesh.creation.box(extents=hi - lo, transform=trimesh.transformations.translation_matrix((lo + hi) / 2))


def frustum(p0, r0: float, p1, r1: float, n: int = 20, angle0: float = 0.0) -> trimesh.Trimesh:
    """Truncated cone (a cylinder when ``r0 == r1``, a prism when ``n`` is small) from ``p0`` to ``p1``."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    ax = p1 - p0
    return _hull(np.concatenate([_ring(p0, ax, r0, n, angle0=angle0), _ring(p1, ax, r1, n, angle0=angle0)]))


def cylinder(p0, p1, r: float, n: int = 20, angle0: float = 0.0) -> trimesh.Trimesh:
    return frustum(p0, r, p1, r, n, angle0)


_SPHERE = trimesh.creation.icosphere(subdivisions=2).vertices


def ellipsoid(center, radii) -> trimesh.Trimesh:
    return _hull(np.asarray(center, float) + _SPHERE * np.asarray(radii, float))


def capsule(p0, r0: float, p1, r1: float) -> trimesh.Trimesh:
    """Convex hull of two spheres (a tapered capsule)."""
    return _hull(np.concatenate([np.asarray(p0, float) + _SPHERE * r0, np.asarray(p1, float) + _SPHERE * r1]))


def closest_on(mesh: trimesh.Trimesh, point) -> np.ndarray:
    """Closest point to ``point`` on ``mesh``'s surface."""
    tris = mesh.triangles
    cand = trimesh.triangles.closest_point(tris, np.repeat(np.asarray(point, float)[None], len(tris), axis=0))
    return cand[np.argmin(np.linalg.norm(cand - point, axis=1))]


def inside_convex(mesh: trimesh.Trimesh, points: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Whether ``points`` lie strictly inside the convex ``mesh`` (deeper than ``eps``)."""
    n = mesh.face_normals
    d = np.einsum("fk,fk->f", n, mesh.triangles[:, 0])
    return np.all(points @ n.T - d < -eps, axis=1)


# --------------------------------------------------------------------------------------------
# Objects


@dataclass
class SynthObject:
    """One generated instance in the canonical, normalised frame."""

    category: Category
    mesh: trimesh.Trimesh
    """All pieces concatenated into one mesh."""
    face_labels: np.ndarray
    """(F,) int part label per face, ``1 + index`` into ``category.parts``."""
    face_piece: np.ndarray
    """(F,) int index of the convex piece each face belongs to."""
    pieces: list[trimesh.Trimesh]
    """The convex pieces (normalised), in ``face_piece`` order."""
    keypoints: np.ndarray
    """(K, 3) float keypoints on the surface."""
    keypoint_ids: np.ndarray
    """(K,) int ids into ``KEYPOINT_NAMES[category.name]``, increasing."""
    texture: Texture
    variant: dict = field(default_factory=dict)
    """Structural choices of this instance (e.g. ``{"legs": "four", "arms": True}``)."""

    def outer_surface_mask(self, points: np.ndarray, face_index: np.ndarray, eps: float = 1e-6) -> np.ndarray:
        """True for surface ``points`` (lying on faces ``face_index``) not buried inside another piece."""
        keep = np.ones(len(points), dtype=bool)
        own = self.face_piece[face_index]
        for i, piece in enumerate(self.pieces):
            cand = keep & (own != i)
            if cand.any():
                keep[cand] &= ~inside_convex(piece, points[cand], eps)
        return keep

    def sample_surface(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` area-uniform points on the outer surface and their part labels (1-based)."""
        areas = self.mesh.area_faces
        pts_out, lab_out, have = [], [], 0
        while have < count:
            n = 2 * (count - have) + 64
            f = rng.choice(len(areas), size=n, p=areas / areas.sum())
            a, b = rng.uniform(size=(2, n))
            flip = a + b > 1
            a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
            tri = self.mesh.triangles[f]
            p = tri[:, 0] + a[:, None] * (tri[:, 1] - tri[:, 0]) + b[:, None] * (tri[:, 2] - tri[:, 0])
            keep = self.outer_surface_mask(p, f)
            pts_out.append(p[keep])
            lab_out.append(self.face_labels[f][keep])
            have += int(keep.sum())
        return np.concatenate(pts_out)[:count], np.concatenate(lab_out)[:count].astype(np.int64)


class _Builder:
    def __init__(self, category: str):
        self.category = CATEGORIES[category]
        self.pieces: list[trimesh.Trimesh] = []
        self.labels: list[int] = []
        self.kps: dict[str, np.ndarray] = {}
        self.variant: dict = {}

    def add(self, mesh: trimesh.Trimesh, part: str) -> trimesh.Trimesh:
        self.pieces.append(mesh)
        self.labels.append(self.category.parts.index(part) + 1)
        return mesh

    def kp(self, name: str, point, on: trimesh.Trimesh | None = None) -> None:
        assert name in KEYPOINT_NAMES[self.category.name], name
        point = np.asarray(point, dtype=np.float64)
        self.kps[name] = closest_on(on, point) if on is not None else point

    def kp_extreme(self, name: str, on: trimesh.Trimesh, direction) -> None:
        self.kps[name] = on.vertices[np.argmax(on.vertices @ np.asarray(direction, float))].copy()

    def build(self, rng: np.random.Generator) -> SynthObject:
        verts = np.concatenate([p.vertices for p in self.pieces])
        lo, hi = verts.min(0), verts.max(0)
        center = (lo + hi) / 2
        scale = LONGEST_EDGE / (hi - lo).max()
        scale = min(scale, MAX_RADIUS / (np.linalg.norm(verts - center, axis=1).max()))
        pieces = [trimesh.Trimesh((p.vertices - center) * scale, p.faces, process=False) for p in self.pieces]
        mesh = trimesh.util.concatenate(pieces)
        face_piece = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(pieces)])
        names = KEYPOINT_NAMES[self.category.name]
        ids = np.array(sorted(names.index(n) for n in self.kps), dtype=np.int64)
        kps = np.array([(self.kps[names[i]] - center) * scale for i in ids], dtype=np.float64).reshape(-1, 3)
        return SynthObject(
            category=self.category,
            mesh=mesh,
            face_labels=np.asarray(self.labels)[face_piece].astype(np.int64),
            face_piece=face_piece,
            pieces=pieces,
            keypoints=kps,
            keypoint_ids=ids,
            texture=random_texture(rng, len(self.category.parts)),
            variant=dict(self.variant),
        )


def _u(rng: np.random.Generator, a: float, b: float) -> float:
    return float(rng.uniform(a, b))


def _chair(rng: np.random.Generator) -> _Builder:
    b = _Builder("chair")
    w, d, t, hs = _u(rng, 0.9, 1.3), _u(rng, 0.85, 1.2), _u(rng, 0.06, 0.14), _u(rng, 0.75, 1.0)
    ys = hs + t
    seat = b.add(box((-w / 2, hs, -d / 2), (w / 2, ys, d / 2)), "seat")
    # back: a box or a frame (two posts + rails), tilted backwards about its bottom front edge
    bh, bt, bw, tilt = _u(rng, 0.8, 1.4), _u(rng, 0.06, 0.12), w * _u(rng, 0.85, 1.0), _u(rng, 0.0, 0.25)
    rot = trimesh.transformations.rotation_matrix(-tilt, [1, 0, 0])
    rot[:3, 3] = (0.0, hs, -d / 2 + bt)

    def back_box(lo, hi):
        return b.add(box(lo, hi).apply_transform(rot), "back")

    frame = rng.uniform() < 0.35
    b.variant["back"] = "frame" if frame else "solid"
    if frame:
        pw, rail = _u(rng, 0.06, 0.1), _u(rng, 0.12, 0.25)
        for s in (-1, 1):
            back_box((s * bw / 2 - (pw if s > 0 else 0), 0, -bt), (s * bw / 2 + (pw if s < 0 else 0), bh, 0))
        top = back_box((-bw / 2, bh - rail, -bt), (bw / 2, bh, 0))
        back_box((-bw / 2, bh * 0.4, -bt * 0.8), (bw / 2, bh * 0.4 + rail * 0.6, -bt * 0.2))
    else:
        top = back_box((-bw / 2, 0, -bt), (bw / 2, bh, 0))
    for s, side in ((1, "left"), (-1, "right")):
        b.kp(f"back_top_{side}", (rot @ [s * (bw / 2 - 0.04 * bw), bh, -bt / 2, 1])[:3], top)
        zb = -d / 2 + bt + 0.06 * d
        b.kp(f"seat_back_{side}", (s * (w / 2 - 0.05 * w), ys, zb), seat)
        b.kp(f"seat_front_{side}", (s * (w / 2 - 0.05 * w), ys, d / 2 - 0.05 * d), seat)
    # legs: four straight/splayed round/square legs, or a pedestal with a disc or star base
    if rng.uniform() < 0.7:
        b.variant["legs"] = "four"
        r, n = _u(rng, 0.03, 0.06), int(rng.choice([4, 16]))
        inset, splay = _u(rng, 0.04, 0.1), _u(rng, 0.0, 0.08)
        for sx, lx in ((1, "left"), (-1, "right")):
            for sz, lz in ((1, "front"), (-1, "back")):
                top = np.array([sx * (w / 2 - inset), hs + t / 2, sz * (d / 2 - inset)])
                bot = np.array([sx * (w / 2 - inset + splay), 0.0, sz * (d / 2 - inset + splay)])
                leg = b.add(cylinder(bot, top, r, n, angle0=np.pi / 4), "leg")
                b.kp(f"leg_{lz}_{lx}", bot, leg)
    else:
        b.variant["legs"] = "pedestal"
        hb = _u(rng, 0.04, 0.08)
        b.add(cylinder((0, hb / 2, 0), (0, hs + t / 2, 0), _u(rng, 0.04, 0.08)), "leg")
        reach = _u(rng, 0.3, 0.45) * (w + d)
        if rng.uniform() < 0.5:
            b.variant["base"] = "disc"
            base = b.add(cylinder((0, 0, 0), (0, hb, 0), reach, 24), "leg")
            b.kp("base_front", (0, hb, reach * 0.92), base)
        else:
            b.variant["base"] = "star"
            for k in range(5):
                a = k * 2 * np.pi / 5
                foot = b.add(
                    frustum((0, hb / 2, 0), hb * 0.8, (reach * np.sin(a), hb / 2, reach * np.cos(a)), hb * 0.5, 4),
                    "leg",
                )
                if k == 0:
                    b.kp("base_front", (0, hb, reach * 0.9), foot)
    # arms
    b.variant["arms"] = bool(rng.uniform() < 0.4)
    if b.variant["arms"]:
        aw, ah, ath = _u(rng, 0.06, 0.12), _u(rng, 0.2, 0.35), _u(rng, 0.04, 0.08)
        zf = d / 2 - _u(rng, 0.0, 0.15)
        for s, side in ((1, "left"), (-1, "right")):
            xc = s * (w / 2 + _u(rng, -0.02, 0.04))
            rest = b.add(box((xc - aw / 2, ys + ah, -d / 2), (xc + aw / 2, ys + ah + ath, zf)), "arm")
            b.add(box((xc - aw / 3, ys - t / 2, zf - 2 * aw / 3), (xc + aw / 3, ys + ah + ath / 2, zf)), "arm")
            b.kp(f"arm_front_{side}", (xc, ys + ah + ath, zf - 0.04), rest)
    return b


def _table(rng: np.random.Generator) -> _Builder:
    b = _Builder("table")
    h, tt = _u(rng, 0.6, 0.9), _u(rng, 0.04, 0.1)
    rect = rng.uniform() < 0.6
    b.variant["top"] = "rectangular" if rect else "round"
    if rect:
        w, d = _u(rng, 1.0, 1.8), _u(rng, 0.6, 1.0)
        top = b.add(box((-w / 2, h - tt, -d / 2), (w / 2, h, d / 2)), "top")
        for sx, lx in ((1, "left"), (-1, "right")):
            for sz, lz in ((1, "front"), (-1, "back")):
                b.kp(f"top_{lz}_{lx}", (sx * (w / 2 - 0.04 * w), h, sz * (d / 2 - 0.04 * d)), top)
        hx, hz = w / 2, d / 2
    else:
        rad = _u(rng, 0.45, 0.7)
        top = b.add(cylinder((0, h - tt, 0), (0, h, 0), rad, 32), "top")
        hx = hz = rad
    b.kp("top_front", (0, h, hz * 0.94), top)
    b.kp("top_back", (0, h, -hz * 0.94), top)
    b.kp("top_left", (hx * 0.94, h, 0), top)
    b.kp("top_right", (-hx * 0.94, h, 0), top)
    b.kp("top_center", (0, h, 0), top)
    if rng.uniform() < (0.75 if rect else 0.4):
        b.variant["legs"] = "four"
        r, n = _u(rng, 0.025, 0.06), int(rng.choice([4, 16]))
        f = _u(rng, 0.8, 0.93) if rect else _u(rng, 0.5, 0.65)
        for sx, lx in ((1, "left"), (-1, "right")):
            for sz, lz in ((1, "front"), (-1, "back")):
                bot = np.array([sx * hx * f, 0.0, sz * hz * f])
                leg = b.add(cylinder(bot, bot + (0, h - tt / 2, 0), r, n, angle0=np.pi / 4), "leg")
                b.kp(f"leg_{lz}_{lx}", bot, leg)
    else:
        b.variant["legs"] = "pedestal"
        hb = _u(rng, 0.03, 0.07)
        b.add(cylinder((0, hb / 2, 0), (0, h - tt / 2, 0), _u(rng, 0.04, 0.1)), "leg")
        reach = _u(rng, 0.45, 0.8) * min(hx, hz)
        base = b.add(cylinder((0, 0, 0), (0, hb, 0), reach, 24), "leg")
        b.kp("base_front", (0, hb, reach * 0.92), base)
    return b


def _airplane(rng: np.random.Generator) -> _Builder:
    b = _Builder("airplane")
    r = _u(rng, 0.045, 0.08)
    zf, zb = 0.5, -0.5
    body = b.add(capsule((0, 0, zf), r, (0, r * 0.3, zb), r * _u(rng, 0.35, 0.7)), "body")
    b.kp_extreme("nose", body, (0, 0, 1))
    b.kp_extreme("tail_end", body, (0, 0, -1))
    b.kp("cockpit", (0, r * 2, zf - 0.12), body)
    span, cr = _u(rng, 0.4, 0.65), _u(rng, 0.18, 0.3)
    ct, sweep = cr * _u(rng, 0.25, 0.6), _u(rng, 0.0, 0.35)
    dih, zw, yw = _u(rng, -0.02, 0.08), _u(rng, -0.1, 0.1), _u(rng, -0.6, 0.6) * r
    b.variant.update(sweep=sweep, wing="high" if yw > 0.2 * r else ("low" if yw < -0.2 * r else "mid"))
    tr, tt = 0.035, 0.015
    for s, side in ((1, "left"), (-1, "right")):
        lead_tip = zw + cr / 2 - sweep
        pts = [
            (0, yw - tr / 2, zw + cr / 2), (0, yw + tr / 2, zw + cr / 2),
            (0, yw - tr / 2, zw - cr / 2), (0, yw + tr / 2, zw - cr / 2),
            (s * span, yw + dih - tt / 2, lead_tip), (s * span, yw + dih + tt / 2, lead_tip),
            (s * span, yw + dih - tt / 2, lead_tip - ct), (s * span, yw + dih + tt / 2, lead_tip - ct),
        ]  # fmt: skip
        wing = b.add(_hull(np.array(pts)), "wing")
        b.kp(f"wing_tip_{side}", (s * span, yw + dih + tt / 2, lead_tip - ct / 2), wing)
        x_mid, lead_mid = s * span * 0.5, zw + cr / 2 - sweep * 0.5
        chord_mid = (cr + ct) / 2
        b.kp(f"wing_front_{side}", (x_mid, yw + dih * 0.5 + tr, lead_mid - 0.12 * chord_mid), wing)
    # tail: vertical fin plus horizontal stabilisers (conventional or T-tail)
    hv, cv = _u(rng, 0.12, 0.22), _u(rng, 0.14, 0.22)
    z0 = zb + 0.02
    fin_pts = [
        (0, 0, z0),
        (0, 0, z0 + cv),
        (0, hv + r * 0.3, z0 - 0.02),
        (0, hv + r * 0.3, z0 + cv * 0.5 - 0.02),
    ]
    fin = b.add(_hull(np.array([(x, y, z) for (_, y, z) in fin_pts for x in (-0.012, 0.012)])), "tail")
    b.kp("vtail_top", (0, hv + r * 0.3, z0 + cv * 0.25 - 0.02), fin)
    t_tail = rng.uniform() < 0.3
    b.variant["tail"] = "T" if t_tail else "conventional"
    ht, sh, ch = (hv + r * 0.3 - 0.01) if t_tail else r * 0.3, _u(rng, 0.12, 0.22), _u(rng, 0.08, 0.13)
    for s, side in ((1, "left"), (-1, "right")):
        zt = z0 + (0.0 if t_tail else 0.02)
        pts = [
            (0, ht, zt + ch),
            (0, ht, zt),
            (s * sh, ht, zt + ch * 0.4 - 0.05),
            (s * sh, ht, zt - 0.05),
        ]
        stab = b.add(_hull(np.array([(x, y + dy, z) for (x, y, z) in pts for dy in (-0.008, 0.008)])), "tail")
        b.kp(f"htail_tip_{side}", (s * sh, ht + 0.008, zt + ch * 0.2 - 0.05), stab)
    n_eng = int(rng.choice([0, 2, 4], p=[0.2, 0.55, 0.25]))
    b.variant["engines"] = n_eng
    re, le = _u(rng, 0.03, 0.05), _u(rng, 0.12, 0.2)
    for k, pos in enumerate(["inner", "outer"][: n_eng // 2]):
        frac = 0.35 if (pos == "inner" and n_eng == 4) else (0.7 if pos == "outer" else 0.4)
        for s, side in ((1, "left"), (-1, "right")):
            x = s * span * frac
            lead = zw + cr / 2 - sweep * frac
            y = yw + dih * frac - re - 0.015
            front = np.array([x, y, lead + le * 0.35])
            eng = b.add(cylinder(front - (0, 0, le), front, re, 16), "engine")
            b.add(box((x - 0.006, y, lead - le * 0.5), (x + 0.006, yw + dih * frac, lead - 0.01)), "engine")
            b.kp(f"engine_{pos}_{side}", front, eng)
        del k
    return b


def _car(rng: np.random.Generator) -> _Builder:
    b = _Builder("car")
    kind = str(rng.choice(["sedan", "hatch", "suv"], p=[0.45, 0.3, 0.25]))
    b.variant["type"] = kind
    L, W = 1.0, _u(rng, 0.4, 0.5)
    R = _u(rng, 0.11, 0.14) if kind == "suv" else _u(rng, 0.08, 0.11)
    c = R * _u(rng, 0.5, 0.8)
    hb = c + (_u(rng, 0.2, 0.27) if kind == "suv" else _u(rng, 0.13, 0.18))
    bev = _u(rng, 0.02, 0.06)
    side = ((c, L / 2 - bev), (c, -L / 2 + bev), (c + bev, L / 2), (c + bev, -L / 2), (hb, L / 2), (hb, -L / 2))
    pts = [(x, y, z) for x in (-W / 2, W / 2) for (y, z) in side]
    body = b.add(_hull(np.array(pts)), "body")
    ym = (c + bev + hb) / 2
    b.kp("bumper_front", (0, ym, L / 2), body)
    b.kp("bumper_rear", (0, ym, -L / 2), body)
    for s, side in ((1, "left"), (-1, "right")):
        b.kp(f"headlight_{side}", (s * W * 0.38, hb - 0.03, L / 2), body)
        b.kp(f"taillight_{side}", (s * W * 0.38, hb - 0.03, -L / 2), body)
    zw = _u(rng, 0.08, 0.2)  # windshield base
    hh = _u(rng, 0.015, 0.045)
    hood_pts = [(x, y, z) for x in (-W * 0.47, W * 0.47) for (y, z) in (
        (hb - 0.01, zw), (hb - 0.01, L / 2 - 0.01), (hb + hh, zw), (hb + hh * 0.3, L / 2 - 0.01))]  # fmt: skip
    hood = b.add(_hull(np.array(hood_pts)), "hood")
    for s, side in ((1, "left"), (-1, "right")):
        b.kp(f"hood_front_{side}", (s * W * 0.42, hb + hh * 0.3, L / 2 - 0.03), hood)
    hc = _u(rng, 0.17, 0.24) if kind == "suv" else _u(rng, 0.12, 0.18)
    back = _u(rng, -0.32, -0.18) if kind == "sedan" else -L / 2 + 0.02
    slope_f = _u(rng, 0.12, 0.25)
    slope_b = {"sedan": _u(rng, 0.08, 0.18), "hatch": _u(rng, 0.04, 0.12), "suv": _u(rng, 0.0, 0.04)}[kind]
    top_f, top_b = zw - slope_f, back + slope_b
    half = (
        (W * 0.47, hb - 0.01, zw),
        (W * 0.47, hb - 0.01, back),
        (W * 0.4, hb + hc, top_f),
        (W * 0.4, hb + hc, top_b),
    )
    cab = [(x * s, y, z) for s in (-1, 1) for (x, y, z) in half]
    roof = b.add(_hull(np.array(cab)), "roof")
    for s, side in ((1, "left"), (-1, "right")):
        b.kp(f"roof_front_{side}", (s * W * 0.36, hb + hc, top_f - 0.03), roof)
        b.kp(f"roof_back_{side}", (s * W * 0.36, hb + hc, top_b + 0.03), roof)
    zwh, ww = _u(rng, 0.3, 0.36), _u(rng, 0.06, 0.09)
    for sx, lx in ((1, "left"), (-1, "right")):
        for sz, lz in ((1, "front"), (-1, "back")):
            xo = sx * (W / 2 + 0.01)
            wheel = b.add(cylinder((xo - sx * ww, R, sz * zwh), (xo, R, sz * zwh), R, 24), "wheel")
            b.kp(f"wheel_{lz}_{lx}", (xo, R, sz * zwh), wheel)
    return b


def _bottle(rng: np.random.Generator) -> _Builder:
    b = _Builder("bottle")
    kind = str(rng.choice(["round", "square", "bulb", "flask"], p=[0.35, 0.2, 0.25, 0.2]))
    b.variant["type"] = kind
    r = _u(rng, 0.18, 0.3)
    hb, hs = _u(rng, 0.35, 0.7), _u(rng, 0.06, 0.25)
    rn = r * _u(rng, 0.25, 0.45)
    n, scale, angle0 = {"square": (4, (1.0, 1.0), np.pi / 4), "flask": (24, (1.0, 0.55), 0.0)}.get(
        kind, (24, (1.0, 1.0), 0.0)
    )
    rad = r * (np.sqrt(2) if kind == "square" else 1.0)
    up = np.array([0.0, 1.0, 0.0])
    rings = [_ring((0, 0, 0), up, rad * 0.9, n, scale, angle0), _ring((0, 0.04, 0), up, rad, n, scale, angle0)]
    if kind == "bulb":
        rings.append(_ring((0, hb * 0.55, 0), up, rad * 1.15, n, scale, angle0))
    rings += [_ring((0, hb, 0), up, rad, n, scale, angle0), _ring((0, hb + hs, 0), up, rn * 1.1, 24)]
    body = b.add(_hull(np.concatenate(rings)), "body")
    hn, taper = _u(rng, 0.08, 0.3), _u(rng, 0.8, 1.0)
    top = hb + hs + hn
    neck = b.add(frustum((0, hb + hs - 0.02, 0), rn, (0, top, 0), rn * taper, 20), "neck")
    b.kp("neck_front", (0, hb + hs + hn * 0.5, 1.0), neck)
    b.variant["lid"] = bool(rng.uniform() < 0.75)
    if b.variant["lid"]:
        lh = _u(rng, 0.04, 0.12)
        lid = b.add(cylinder((0, top - lh * 0.4, 0), (0, top + lh * 0.6, 0), rn * taper * _u(rng, 1.05, 1.35)), "lid")
        b.kp("lid_top", (0, top + lh * 0.6, 0), lid)
    else:
        b.kp("mouth", (0, top, 0), neck)
    far = 10.0
    for name, d in (("front", (0, 0, 1)), ("back", (0, 0, -1)), ("left", (1, 0, 0)), ("right", (-1, 0, 0))):
        d = np.array(d, float) * far
        b.kp(f"shoulder_{name}", d + (0, hb + hs * 0.45, 0), body)
        b.kp(f"base_{name}", d + (0, 0.02, 0), body)
    b.kp("body_front", (0, hb * 0.5, far), body)
    return b


def _motorcycle(rng: np.random.Generator) -> _Builder:
    b = _Builder("motorcycle")
    kind = str(rng.choice(["sport", "cruiser", "standard"]))
    b.variant["type"] = kind
    rf = _u(rng, 0.27, 0.35)
    rr = rf * _u(rng, 0.95, 1.12)
    ww, wb = _u(rng, 0.08, 0.14), _u(rng, 1.25, 1.6) * (1.1 if kind == "cruiser" else 1.0)
    zf, zr = wb / 2, -wb / 2
    for z, rad, name in ((zf, rf, "front"), (zr, rr, "rear")):
        wheel = b.add(cylinder((-ww / 2, rad, z), (ww / 2, rad, z), rad, 28), "wheel")
        b.kp(f"{name}_wheel_left", (ww / 2, rad * 0.45, z), wheel)
        b.kp(f"{name}_wheel_right", (-ww / 2, rad * 0.45, z), wheel)
        b.kp(f"{name}_wheel_top", (0, 2 * rad, z + 0.35 * rad * (1 if name == "front" else -1)), wheel)
    # steering head, fork, frame, engine
    head = np.array([0.0, rf * 2 + _u(rng, 0.25, 0.4), zf - _u(rng, 0.2, 0.32)])
    for s in (-1, 1):
        b.add(cylinder((s * (ww / 2 + 0.03), rf, zf), head + (s * 0.05, 0, 0), 0.025, 10), "body")
    b.add(capsule(head, 0.05, (0, rr + 0.1, zr * 0.55), 0.045), "body")
    eng_h = _u(rng, 0.2, 0.3)
    b.add(box((-0.13, rr * 0.6, zr * 0.35), (0.13, rr * 0.6 + eng_h, zf * 0.45)), "body")
    for s in (-1, 1):
        b.add(cylinder((s * (ww / 2 + 0.02), rr, zr), (s * 0.08, rr + 0.12, zr * 0.3), 0.022, 8), "body")
    # tank and seat
    ty = head[1] - _u(rng, 0.02, 0.1)
    tl, tw = _u(rng, 0.18, 0.28) * (1.2 if kind == "cruiser" else 1.0), _u(rng, 0.1, 0.16)
    tz = head[2] - tl - 0.02
    ry = _u(rng, 0.07, 0.11)
    tank = b.add(ellipsoid((0, ty, tz), (tw, ry, tl)), "gas_tank")
    b.kp_extreme("tank_top", tank, (0, 1, 0))
    sy = ty - (_u(rng, 0.08, 0.16) if kind == "cruiser" else _u(rng, -0.02, 0.06))
    sf = tz - tl * 0.7
    sr = zr * _u(rng, 0.45, 0.75)
    st, swd = _u(rng, 0.05, 0.09), _u(rng, 0.1, 0.15)
    seat = b.add(box((-swd, sy - st, sr), (swd, sy, sf)), "seat")
    # the seat tucks under the tank's tail: its front keypoint is where the seat top leaves the tank
    z_tank = tz - tl * np.sqrt(max(0.0, 1.0 - ((sy - ty) / ry) ** 2)) if abs(sy - ty) < ry else sf
    b.kp("seat_front", (0, sy, min(sf, z_tank) - 0.03), seat)
    b.kp("seat_rear", (0, sy, sr + 0.03), seat)
    y0 = sy - st
    outline = ((y0 - 0.02, sr + 0.05), (y0 + 0.03, sr + 0.05), (y0 + 0.02, sr - 0.18), (y0 - 0.05, sr - 0.16))
    tail = b.add(_hull(np.array([(x, y, z) for x in (-0.07, 0.07) for (y, z) in outline])), "body")
    b.kp_extreme("tail_end", tail, (0, 0.2, -1))
    if kind == "sport":
        front = _ring(head + (0, 0.02, 0.04), (0, 0, 1), 0.09, 12, (1.2, 1.0))
        b.add(_hull(np.concatenate([front, _ring(head + (0, -0.12, -0.12), (0, 0, 1), 0.12, 12, (1.2, 1.0))])), "body")
    # handlebar: riser + bar with grips, height by style
    rise = {"sport": _u(rng, 0.0, 0.04), "standard": _u(rng, 0.06, 0.12), "cruiser": _u(rng, 0.14, 0.24)}[kind]
    hw = _u(rng, 0.22, 0.34)
    bar_c = head + (0, rise + 0.03, -0.05)
    b.add(cylinder(head, bar_c, 0.02, 8), "handle")
    for s, side in ((1, "left"), (-1, "right")):
        bar = b.add(cylinder(bar_c, bar_c + (s * hw, 0.02, -0.06), 0.02, 10), "handle")
        b.kp(f"handle_{side}", bar_c + (s * hw, 0.02, -0.06), bar)
    lc = head + (0, -0.06, 0.1 if kind != "sport" else 0.14)
    if rng.uniform() < 0.5:
        b.variant["light"] = "round"
        light = b.add(cylinder(lc - (0, 0, 0.06), lc + (0, 0, 0.02), _u(rng, 0.05, 0.08), 20), "light")
        b.kp("headlight", lc + (0, 0, 0.02), light)
    else:
        b.variant["light"] = "square"
        sz = _u(rng, 0.05, 0.08)
        light = b.add(box(lc - (sz, sz * 0.7, 0.06), lc + (sz, sz * 0.7, 0.03)), "light")
        b.kp("headlight", lc + (0, 0, 0.03), light)
    return b


_FAMILIES: dict[str, Callable[[np.random.Generator], _Builder]] = {
    "chair": _chair,
    "table": _table,
    "airplane": _airplane,
    "car": _car,
    "bottle": _bottle,
    "motorcycle": _motorcycle,
}


def make_object(category: str, rng: np.random.Generator) -> SynthObject:
    """Generate one instance of ``category`` (a name from :data:`featurenerf_ns.categories.CATEGORIES`).

    Deterministic given the state of ``rng``.
    """
    if category not in _FAMILIES:
        raise ValueError(f"no synthetic family for category {category!r}; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[category](rng).build(rng)
