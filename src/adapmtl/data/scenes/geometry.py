"""Ray casting against the scene's primitives, vectorised over rays in NumPy.

World frame: y up, the floor is the plane y = 0, the room is the box
[0, width] x [0, height] x [0, depth]. Every object is a convex solid standing on a base plane,
described in a local frame (y up, base at y = 0, centred on the y axis) and placed in the world
by a yaw rotation about y and a translation.

All intersection routines take ray origins ``o`` (shape ``[3]`` or ``[P, 3]``) and directions
``d`` (``[P, 3]``, not necessarily unit) and return ``(t, n)``: the ray parameter of the first
hit with ``t > EPS`` (``inf`` on a miss) and the outward unit normal there (``[P, 3]``). Because
directions need not be unit, the caller chooses what ``t`` measures; the renderer scales camera
rays so that ``t`` is the z-depth.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

EPS = 1e-6
_TINY = 1e-12


def _nonzero(x: np.ndarray) -> np.ndarray:
    """Replace exact zeros (and denormal values) by a tiny positive number before dividing."""
    return np.where(np.abs(x) < _TINY, _TINY, x)


def _closest(
    candidates: list[tuple[np.ndarray, np.ndarray]], count: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pick, per ray, the smallest valid ``t`` among candidate hits ``(t, normal)``."""
    t_all = np.stack([t for t, _ in candidates])
    best = np.argmin(t_all, axis=0)
    rows = np.arange(count)
    t = t_all[best, rows]
    normals = np.stack([np.broadcast_to(n, (count, 3)) for _, n in candidates])
    return t, normals[best, rows]


def _valid(t: np.ndarray, ok: np.ndarray) -> np.ndarray:
    return np.where(ok & (t > EPS), t, np.inf)


def intersect_convex_polyhedron(
    o: np.ndarray, d: np.ndarray, normals: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """First hit with the solid {x : normals @ x <= offsets} (unit ``normals`` [F, 3])."""
    denom = _nonzero(d @ normals.T)
    num = offsets - o @ normals.T
    with np.errstate(over="ignore"):
        t_plane = num / denom
    entering = denom < 0
    t_in = np.where(entering, t_plane, -np.inf)
    face = np.argmax(t_in, axis=1)
    t_enter = t_in[np.arange(len(d)), face]
    t_exit = np.where(entering, np.inf, t_plane).min(axis=1)
    t = _valid(t_enter, t_enter <= t_exit)
    return t, normals[face]


def _solve_quadratic(
    a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roots of a t^2 + b t + c = 0 (smaller first) and whether they are real."""
    disc = b * b - 4.0 * a * c
    real = disc >= 0
    root = np.sqrt(np.where(real, disc, 0.0))
    # Numerically stable form; q != 0 unless b = disc = 0.
    q = -0.5 * (b + np.where(b >= 0, root, -root))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r1 = np.where(np.abs(a) > _TINY, q / _nonzero(a), -c / _nonzero(b))
        r2 = np.where(np.abs(q) > _TINY, c / _nonzero(q), r1)
    return np.minimum(r1, r2), np.maximum(r1, r2), real


def _disc_hit(
    o: np.ndarray, d: np.ndarray, y: float, radius: float, normal_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Hit with the horizontal disc of ``radius`` at height ``y`` (centre on the y axis)."""
    with np.errstate(over="ignore"):
        t = (y - o[..., 1]) / _nonzero(d[:, 1])
    x = o[..., 0] + t * d[:, 0]
    z = o[..., 2] + t * d[:, 2]
    with np.errstate(invalid="ignore"):
        inside = x * x + z * z <= radius * radius
    return _valid(t, inside), np.array([0.0, normal_y, 0.0])


class Shape:
    """A convex solid in its local frame; subclasses implement the three methods below."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def vertices(self) -> np.ndarray:
        """Corners/apexes (``[K, 3]``, K may be 0): the keypoints of this shape."""
        raise NotImplementedError

    @property
    def top(self) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class Box(Shape):
    """Axis-aligned box [-hx, hx] x [0, height] x [-hz, hz]."""

    hx: float
    hz: float
    height: float

    @cached_property
    def planes(self) -> tuple[np.ndarray, np.ndarray]:
        normals = np.array(
            [[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0], [0, 0, 1.0], [0, 0, -1.0]]
        )
        return normals, np.array([self.hx, self.hx, self.height, 0.0, self.hz, self.hz])

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return intersect_convex_polyhedron(o, d, *self.planes)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half_h = self.height / 2
        return np.array([0.0, half_h, 0.0]), float(np.sqrt(self.hx**2 + self.hz**2 + half_h**2))

    def vertices(self) -> np.ndarray:
        return np.array(
            [
                [sx * self.hx, y, sz * self.hz]
                for sx in (-1, 1)
                for y in (0.0, self.height)
                for sz in (-1, 1)
            ]
        )

    @property
    def top(self) -> float:
        return self.height


@dataclass(frozen=True)
class Pyramid(Shape):
    """Square pyramid: base [-half, half]^2 at y = 0, apex at (0, height, 0)."""

    half: float
    height: float

    @cached_property
    def planes(self) -> tuple[np.ndarray, np.ndarray]:
        h, a = self.height, self.half
        normals = np.array(
            [[0, -1.0, 0], [h, a, 0], [-h, a, 0], [0, a, h], [0, a, -h]], dtype=np.float64
        )
        norms = np.linalg.norm(normals, axis=1)
        offsets = np.array([0.0, h * a, h * a, h * a, h * a]) / norms
        return normals / norms[:, None], offsets

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return intersect_convex_polyhedron(o, d, *self.planes)

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half_h = self.height / 2
        return np.array([0.0, half_h, 0.0]), float(np.sqrt(2 * self.half**2 + half_h**2))

    def vertices(self) -> np.ndarray:
        a = self.half
        base = [[sx * a, 0.0, sz * a] for sx in (-1, 1) for sz in (-1, 1)]
        return np.array([*base, [0.0, self.height, 0.0]])

    @property
    def top(self) -> float:
        return self.height


@dataclass(frozen=True)
class Sphere(Shape):
    """Sphere of ``radius`` resting on y = 0 (centre at (0, radius, 0))."""

    radius: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centre = np.array([0.0, self.radius, 0.0])
        oc = o - centre
        a = np.einsum("ij,ij->i", d, d)
        b = 2.0 * (d @ oc if oc.ndim == 1 else np.einsum("ij,ij->i", d, oc))
        c = np.einsum("...j,...j->...", oc, oc) - self.radius**2
        t1, _, real = _solve_quadratic(a, b, np.broadcast_to(c, a.shape))
        t = _valid(t1, real)
        hit = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d) - centre
        return t, hit / self.radius

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.array([0.0, self.radius, 0.0]), self.radius * (1 + 1e-6)

    def vertices(self) -> np.ndarray:
        return np.zeros((0, 3))

    @property
    def top(self) -> float:
        return 2 * self.radius


@dataclass(frozen=True)
class Cylinder(Shape):
    """Vertical cylinder of ``radius``, from y = 0 to y = height, with flat caps."""

    radius: float
    height: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
        a = d[:, 0] ** 2 + d[:, 2] ** 2
        b = 2.0 * (ox * d[:, 0] + oz * d[:, 2])
        c = np.broadcast_to(ox * ox + oz * oz - self.radius**2, a.shape)
        t1, _, real = _solve_quadratic(a, b, c)
        y1 = oy + t1 * d[:, 1]
        side_t = _valid(t1, real & (y1 >= 0) & (y1 <= self.height))
        side_pt = o + np.where(np.isfinite(side_t), side_t, 0.0)[:, None] * d
        side_n = side_pt * np.array([1.0, 0.0, 1.0]) / self.radius
        return _closest(
            [
                (side_t, side_n),
                _disc_hit(o, d, self.height, self.radius, 1.0),
                _disc_hit(o, d, 0.0, self.radius, -1.0),
            ],
            len(d),
        )

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half_h = self.height / 2
        return np.array([0.0, half_h, 0.0]), float(np.sqrt(self.radius**2 + half_h**2))

    def vertices(self) -> np.ndarray:
        return np.zeros((0, 3))

    @property
    def top(self) -> float:
        return self.height


@dataclass(frozen=True)
class Cone(Shape):
    """Right circular cone: base disc of ``radius`` at y = 0, apex at (0, height, 0)."""

    radius: float
    height: float

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k2 = (self.radius / self.height) ** 2
        ox, oy, oz = o[..., 0], o[..., 1], o[..., 2]
        q0 = self.height - oy
        # x^2 + z^2 = k^2 (height - y)^2 along the ray; the nappe below the apex is the solid.
        a = d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2
        b = 2.0 * (ox * d[:, 0] + oz * d[:, 2] + k2 * q0 * d[:, 1])
        c = np.broadcast_to(ox * ox + oz * oz - k2 * q0 * q0, a.shape)
        r1, r2, real = _solve_quadratic(a, b, c)
        hits = [_disc_hit(o, d, 0.0, self.radius, -1.0)]
        for root in (r1, r2):
            y = oy + root * d[:, 1]
            t = _valid(root, real & (y >= 0) & (y <= self.height))
            pt = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
            n = np.stack([pt[:, 0], k2 * (self.height - pt[:, 1]), pt[:, 2]], axis=1)
            hits.append((t, n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), _TINY)))
        return _closest(hits, len(d))

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        half_h = self.height / 2
        return np.array([0.0, half_h, 0.0]), float(np.sqrt(self.radius**2 + half_h**2))

    def vertices(self) -> np.ndarray:
        return np.array([[0.0, self.height, 0.0]])

    @property
    def top(self) -> float:
        return self.height


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about the y axis by ``yaw`` radians (local -> world)."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass(frozen=True)
class Placed:
    """A shape placed in the world: ``world = yaw_matrix(yaw) @ local + position``."""

    shape: Shape
    position: np.ndarray
    yaw: float

    @cached_property
    def rotation(self) -> np.ndarray:
        return yaw_matrix(self.yaw)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        return (points - self.position) @ self.rotation

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rot = self.rotation
        t, n_local = self.shape.intersect((o - self.position) @ rot, d @ rot)
        return t, n_local @ rot.T

    @cached_property
    def bounds(self) -> tuple[np.ndarray, float]:
        """World centre and radius of a sphere containing the object."""
        centre, radius = self.shape.bounding_sphere()
        return self.rotation @ centre + self.position, radius

    def may_hit(self, origin: np.ndarray, unit_directions: np.ndarray) -> np.ndarray:
        """Cheap pre-test for rays from one ``origin`` with unit directions [P, 3]: the rays
        within the cone that the bounding sphere subtends (all rays if the origin is inside)."""
        centre, radius = self.bounds
        to_centre = centre - origin
        distance = float(np.linalg.norm(to_centre))
        if distance <= radius:
            return np.ones(len(unit_directions), dtype=bool)
        cos_half_angle = np.sqrt(1.0 - (radius / distance) ** 2)
        return unit_directions @ (to_centre / distance) >= cos_half_angle

    def world_vertices(self) -> np.ndarray:
        return self.shape.vertices() @ self.rotation.T + self.position


@dataclass(frozen=True)
class Room:
    """The inside of the box [0, width] x [0, height] x [0, depth], seen from within.

    Surface ids: 0 floor, 1 ceiling, 2 wall x = 0, 3 wall x = width, 4 wall z = 0,
    5 wall z = depth. Normals point into the room.
    """

    width: float
    height: float
    depth: float

    SURFACES = 6

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(t, normal, surface id)`` of the exit point of rays starting inside the room."""
        size = np.array([self.width, self.height, self.depth])
        safe = _nonzero(d)
        with np.errstate(over="ignore"):
            t_axis = np.where(d > 0, (size - o) / safe, -o / safe)
        t_axis = np.where(np.abs(d) < _TINY, np.inf, t_axis)
        axis = np.argmin(t_axis, axis=1)
        rows = np.arange(len(d))
        t = t_axis[rows, axis]
        positive = d[rows, axis] > 0
        # axis 0 (x): walls 2/3; axis 1 (y): floor 0 / ceiling 1; axis 2 (z): walls 4/5.
        surface = np.array([2, 0, 4])[axis] + positive
        normal = np.zeros((len(d), 3))
        normal[rows, axis] = np.where(positive, -1.0, 1.0)
        return t, normal, surface
