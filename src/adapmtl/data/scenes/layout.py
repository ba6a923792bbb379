"""What a scene is, and how a random one is drawn from a seed.

A :class:`Scene` holds everything the renderer needs; it does not depend on the output
resolution, so the same scene can be rendered at any size. :func:`sample_scene` draws one from a
``numpy.random.Generator``; tests build scenes by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adapmtl.data.scenes.geometry import Box, Cone, Cylinder, Placed, Pyramid, Room, Shape, Sphere

CLASS_NAMES: tuple[str, ...] = (
    "floor",
    "wall",
    "ceiling",
    "box",
    "sphere",
    "cylinder",
    "cone",
    "pyramid",
)
NUM_CLASSES = len(CLASS_NAMES)
FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, CONE, PYRAMID = range(NUM_CLASSES)
# Room surface id (see geometry.Room) -> semantic class.
ROOM_SURFACE_CLASSES = (FLOOR, CEILING, WALL, WALL, WALL, WALL)

TEXTURES = ("plain", "stripes", "checker", "noise")
# Cumulative texture probabilities (objects, room surfaces), in the order of TEXTURES.
_OBJECT_TEXTURE_CDF = np.cumsum([0.25, 0.25, 0.2, 0.3])[:-1]
_ROOM_TEXTURE_CDF = np.cumsum([0.3, 0.3, 0.1, 0.3])[:-1]

# Typical hue (degrees), saturation, value per class; instances jitter around them and a
# fraction of objects gets an arbitrary colour, so colour alone does not give the class.
_CLASS_HSV = {
    FLOOR: (30.0, 0.45, 0.55),
    WALL: (40.0, 0.12, 0.85),
    CEILING: (50.0, 0.05, 0.92),
    BOX: (5.0, 0.65, 0.75),
    SPHERE: (215.0, 0.6, 0.75),
    CYLINDER: (120.0, 0.55, 0.65),
    CONE: (50.0, 0.7, 0.8),
    PYRAMID: (285.0, 0.5, 0.7),
}
_RANDOM_COLOUR_PROBABILITY = 0.3


@dataclass(frozen=True)
class Camera:
    """Pinhole camera. ``rotation`` maps camera to world coordinates; its columns are the camera
    axes in the world: x right, y up, z backwards (the camera looks along -z)."""

    position: np.ndarray
    rotation: np.ndarray
    hfov: float  # horizontal field of view, radians

    def intrinsics(self, height: int, width: int) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels; pixel (i, j) has its centre at (j + 0.5, i + 0.5)."""
        fx = (width / 2) / np.tan(self.hfov / 2)
        return float(fx), float(fx), width / 2, height / 2


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation looking from ``position`` towards ``target`` (world y up)."""
    back = position - target
    back = back / np.linalg.norm(back)
    right = np.cross(np.array([0.0, 1.0, 0.0]), back)
    right = right / np.linalg.norm(right)
    up = np.cross(back, right)
    c, s = np.cos(roll), np.sin(roll)
    right, up = c * right + s * up, -s * right + c * up
    return np.stack([right, up, back], axis=1)


@dataclass(frozen=True)
class Material:
    """Albedo of one surface: ``colour`` mixed with ``second`` by a procedural pattern."""

    colour: np.ndarray  # linear RGB in [0, 1]
    second: np.ndarray
    texture: str
    frequency: float  # pattern cycles per metre
    axis: np.ndarray  # unit vector: stripe direction
    seed: int  # lattice hash seed of the noise pattern


@dataclass(frozen=True)
class Light:
    position: np.ndarray
    intensity: np.ndarray  # RGB
    falloff: float  # irradiance / (1 + falloff * distance^2)


@dataclass(frozen=True)
class Scene:
    room: Room
    camera: Camera
    objects: list[Placed]
    classes: list[int]  # semantic class of each object
    room_materials: list[Material]  # one per room surface id
    object_materials: list[Material]
    lights: list[Light]
    ambient: float
    exposure: float  # multiplies the auto-exposure
    noise_sigma: float  # std of the additive pixel noise, in [0, 1] units
    noise_seed: int


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    h = (h % 360.0) / 60.0
    c = v * s
    x = c * (1 - abs(h % 2 - 1))
    sector = int(h) % 6
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return np.array(rgb) + (v - c)


def _colour(rng: np.random.Generator, cls: int, objects: bool) -> np.ndarray:
    if objects and rng.random() < _RANDOM_COLOUR_PROBABILITY:
        return _hsv_to_rgb(rng.uniform(0, 360), rng.uniform(0.2, 0.8), rng.uniform(0.4, 0.9))
    h, s, v = _CLASS_HSV[cls]
    jitter = 40.0 if objects else 20.0
    return _hsv_to_rgb(
        h + rng.uniform(-jitter, jitter),
        min(max(s + rng.uniform(-0.2, 0.2), 0.0), 1.0),
        min(max(v + rng.uniform(-0.2, 0.15), 0.15), 1.0),
    )


def _material(rng: np.random.Generator, cls: int, objects: bool) -> Material:
    colour = _colour(rng, cls, objects)
    if rng.random() < 0.4:
        second = _colour(rng, int(rng.integers(NUM_CLASSES)), objects=True)
    else:
        second = colour * rng.uniform(0.4, 0.8)
    cumulative = _OBJECT_TEXTURE_CDF if objects else _ROOM_TEXTURE_CDF
    axis = rng.normal(size=3)
    return Material(
        colour=colour,
        second=second,
        texture=TEXTURES[int(np.searchsorted(cumulative, rng.random(), side="right"))],
        frequency=float(rng.uniform(2.0, 8.0) if objects else rng.uniform(1.0, 4.0)),
        axis=axis / np.sqrt(axis @ axis),
        seed=int(rng.integers(2**31)),
    )


def _random_shape(rng: np.random.Generator, cls: int, scale: float = 1.0) -> Shape:
    u = rng.uniform
    if cls == BOX:
        return Box(hx=u(0.15, 0.55) * scale, hz=u(0.15, 0.55) * scale, height=u(0.25, 1.1) * scale)
    if cls == SPHERE:
        return Sphere(radius=u(0.15, 0.45) * scale)
    if cls == CYLINDER:
        return Cylinder(radius=u(0.12, 0.4) * scale, height=u(0.3, 1.3) * scale)
    if cls == CONE:
        return Cone(radius=u(0.15, 0.45) * scale, height=u(0.35, 1.2) * scale)
    return Pyramid(half=u(0.15, 0.45) * scale, height=u(0.3, 1.0) * scale)


def _footprint(shape: Shape) -> float:
    """Radius of a vertical cylinder (about the local y axis) containing the shape."""
    if isinstance(shape, Box):
        return math.hypot(shape.hx, shape.hz)
    if isinstance(shape, Pyramid):
        return math.sqrt(2) * shape.half
    assert isinstance(shape, (Sphere, Cylinder, Cone))
    return shape.radius


def _place_objects(
    rng: np.random.Generator, room: Room
) -> tuple[list[Placed], list[int], list[tuple[np.ndarray, float]]]:
    """Non-overlapping objects on the floor, some with a smaller object stacked on top."""
    objects: list[Placed] = []
    classes: list[int] = []
    footprints: list[tuple[np.ndarray, float]] = []  # (xz centre, radius) on the floor
    margin = 0.2
    for _ in range(int(rng.integers(4, 10))):
        cls = int(rng.integers(BOX, PYRAMID + 1))
        shape = _random_shape(rng, cls)
        radius = _footprint(shape)
        for _attempt in range(20):
            xz = np.array(
                [
                    rng.uniform(radius + margin, room.width - radius - margin),
                    rng.uniform(radius + margin, room.depth - radius - margin),
                ]
            )
            if all(math.dist(xz, c) > radius + r + 0.05 for c, r in footprints):
                break
        else:
            continue
        position = np.array([xz[0], 0.0, xz[1]])
        objects.append(Placed(shape, position, float(rng.uniform(0, 2 * np.pi))))
        classes.append(cls)
        footprints.append((xz, radius))
        if cls == BOX and rng.random() < 0.35:
            top_cls = int(rng.integers(BOX, PYRAMID + 1))
            fit = min(shape.hx, shape.hz)
            top_shape = _random_shape(rng, top_cls, scale=0.5)
            if _footprint(top_shape) < fit:
                top_position = np.array([xz[0], shape.height, xz[1]])
                objects.append(Placed(top_shape, top_position, float(rng.uniform(0, 2 * np.pi))))
                classes.append(top_cls)
    return objects, classes, footprints


def _place_camera(
    rng: np.random.Generator,
    room: Room,
    objects: list[Placed],
    footprints: list[tuple[np.ndarray, float]],
) -> Camera:
    clearance = 0.6
    xz = np.array([room.width / 2, room.depth / 2])
    for _attempt in range(50):
        xz = np.array([rng.uniform(0.4, room.width - 0.4), rng.uniform(0.4, room.depth - 0.4)])
        if all(math.dist(xz, c) > r + clearance for c, r in footprints):
            break
    position = np.array([xz[0], rng.uniform(0.9, min(2.0, room.height - 0.3)), xz[1]])
    if objects:
        target_object = objects[int(rng.integers(len(objects)))]
        target = target_object.position + np.array(
            [rng.normal(0, 0.3), rng.uniform(0.0, target_object.shape.top), rng.normal(0, 0.3)]
        )
    else:
        target = np.array([room.width / 2, 0.5, room.depth / 2])
    if np.hypot(*(target - position)[[0, 2]]) < 0.5:
        target = target + np.array([1.0, 0.0, 0.0])
    return Camera(
        position=position,
        rotation=look_at(position, target, roll=rng.uniform(-0.08, 0.08)),
        hfov=float(np.radians(rng.uniform(55.0, 80.0))),
    )


def _lights(rng: np.random.Generator, room: Room) -> list[Light]:
    lights = []
    for k in range(int(rng.integers(1, 3))):
        strength = rng.uniform(0.7, 1.0) if k == 0 else rng.uniform(0.25, 0.6)
        tint = np.array([1.0, 1.0, 1.0]) + rng.uniform(-0.12, 0.12, size=3)
        lights.append(
            Light(
                position=np.array(
                    [
                        rng.uniform(0.3, room.width - 0.3),
                        rng.uniform(room.height - 0.6, room.height - 0.1),
                        rng.uniform(0.3, room.depth - 0.3),
                    ]
                ),
                intensity=strength * tint,
                falloff=float(rng.uniform(0.02, 0.1)),
            )
        )
    return lights


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw a random room, its objects, camera, materials and lights."""
    room = Room(
        width=float(rng.uniform(4.0, 7.0)),
        height=float(rng.uniform(2.5, 3.2)),
        depth=float(rng.uniform(4.0, 7.0)),
    )
    objects, classes, footprints = _place_objects(rng, room)
    camera = _place_camera(rng, room, objects, footprints)
    return Scene(
        room=room,
        camera=camera,
        objects=objects,
        classes=classes,
        room_materials=[_material(rng, cls, objects=False) for cls in ROOM_SURFACE_CLASSES],
        object_materials=[_material(rng, cls, objects=True) for cls in classes],
        lights=_lights(rng, room),
        ambient=float(rng.uniform(0.1, 0.3)),
        exposure=float(rng.uniform(0.8, 1.1)),
        noise_sigma=float(rng.uniform(0.01, 0.04)),
        noise_seed=int(rng.integers(2**31)),
    )
