"""Render a :class:`~adapmtl.data.scenes.layout.Scene` at any resolution: the RGB image and a true
target for every task, all from one ray cast.

Camera frame (the frame of the normals): x right, y up, z towards the viewer (the camera looks
along -z), a right-handed frame; visible surfaces therefore have normals with z > 0 mostly.
Depth is the z-depth (distance along the optical axis), in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adapmtl.data.scenes.geometry import Placed
from adapmtl.data.scenes.layout import ROOM_SURFACE_CLASSES, Scene
from adapmtl.data.scenes.shading import albedo, camera_response, irradiance

EDGE_CREASE_DEGREES = 30.0
KEYPOINT_SIGMA = 0.02  # Gaussian std of a keypoint blob, as a fraction of min(H, W)
_KEYPOINT_VISIBILITY_TOLERANCE = 1e-3  # relative depth slack of the vertex visibility test


@dataclass(frozen=True)
class SceneRender:
    """One rendered view. Arrays are H x W (x C) NumPy arrays."""

    rgb: np.ndarray  # uint8 [H, W, 3]
    seg: np.ndarray  # int64 [H, W], class ids (layout.CLASS_NAMES)
    depth: np.ndarray  # float32 [H, W], metres, > 0
    normal: np.ndarray  # float32 [H, W, 3], unit, camera frame
    keypoint: np.ndarray  # float32 [H, W], heatmap in [0, 1]
    edge: np.ndarray  # float32 [H, W], {0, 1}
    instance: np.ndarray  # int64 [H, W]: room surface 0-5, object k -> 6 + k
    intrinsics: tuple[float, float, float, float]  # fx, fy, cx, cy
    keypoints: np.ndarray  # float64 [K, 2] (row, col) of the visible vertices


def camera_rays(scene: Scene, height: int, width: int) -> np.ndarray:
    """World-space ray directions [H*W, 3] through pixel centres, scaled so that the ray
    parameter t equals the z-depth of the point."""
    fx, fy, cx, cy = scene.camera.intrinsics(height, width)
    rows, cols = np.mgrid[0:height, 0:width]
    directions = np.stack(
        [
            ((cols + 0.5 - cx) / fx).ravel(),
            (-(rows + 0.5 - cy) / fy).ravel(),
            -np.ones(height * width),
        ],
        axis=1,
    )
    return directions @ scene.camera.rotation.T


def cast(
    scene: Scene, origin: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of rays from ``origin`` (inside the room): ``(t, world normal, instance)``."""
    t, normal, instance = scene.room.intersect(origin, directions)
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    for k, obj in enumerate(scene.objects):
        candidates = np.flatnonzero(obj.may_hit(origin, unit))
        if candidates.size == 0:
            continue
        t_obj, n_obj = obj.intersect(origin, directions[candidates])
        closer = t_obj < t[candidates]
        hit = candidates[closer]
        t[hit] = t_obj[closer]
        normal[hit] = n_obj[closer]
        instance[hit] = scene.room.SURFACES + k
    return t, normal, instance


def _albedo_map(scene: Scene, points: np.ndarray, instance: np.ndarray) -> np.ndarray:
    result = np.empty_like(points)
    surfaces = scene.room.SURFACES
    for inst in np.unique(instance):
        where = instance == inst
        if inst < surfaces:
            result[where] = albedo(scene.room_materials[inst], points[where])
        else:
            obj: Placed = scene.objects[inst - surfaces]
            local = obj.to_local(points[where])
            result[where] = albedo(scene.object_materials[inst - surfaces], local)
    return result


def edge_map(instance: np.ndarray, normal: np.ndarray, crease_degrees: float) -> np.ndarray:
    """1 on both sides of every occlusion boundary (the visible surface changes) and crease
    (neighbouring normals differ by more than ``crease_degrees``), else 0."""
    cos_limit = np.cos(np.radians(crease_degrees))
    edge = np.zeros(instance.shape, dtype=bool)
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        a, b = tuple(a), tuple(b)
        cosine = np.einsum("...c,...c->...", normal[a], normal[b])
        jump = (instance[a] != instance[b]) | (cosine < cos_limit)
        edge[a] |= jump
        edge[b] |= jump
    return edge.astype(np.float32)


def vertex_rays(scene: Scene, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Object vertices that project inside the image: ``(directions [K, 3], pixels [K, 2])``.

    Directions point from the camera to the vertex (so the vertex is at t = 1); pixels are
    (row, col).
    """
    vertices = [obj.world_vertices() for obj in scene.objects]
    points = np.concatenate(vertices) if vertices else np.zeros((0, 3))
    cam = scene.camera
    local = (points - cam.position) @ cam.rotation  # camera coordinates
    z_depth = -local[:, 2]
    in_front = z_depth > 1e-3
    points, local, z_depth = points[in_front], local[in_front], z_depth[in_front]
    fx, fy, cx, cy = cam.intrinsics(height, width)
    col = cx + fx * local[:, 0] / z_depth
    row = cy - fy * local[:, 1] / z_depth
    inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
    return points[inside] - cam.position, np.stack([row[inside], col[inside]], axis=1)


def keypoint_heatmap(keypoints: np.ndarray, height: int, width: int) -> np.ndarray:
    """Max over keypoints of exp(-r^2 / (2 sigma^2)), sigma = KEYPOINT_SIGMA * min(H, W),
    evaluated at pixel centres (values below exp(-4.5), beyond 3 sigma, are left at 0)."""
    heat = np.zeros((height, width), dtype=np.float32)
    sigma = max(KEYPOINT_SIGMA * min(height, width), 0.5)
    reach = 3 * sigma
    for r, c in keypoints:
        r0, r1 = max(0, int(r - reach)), min(height, int(r + reach) + 1)
        c0, c1 = max(0, int(c - reach)), min(width, int(c + reach) + 1)
        dr = np.arange(r0, r1) + 0.5 - r
        dc = np.arange(c0, c1) + 0.5 - c
        blob = np.exp(-(dr[:, None] ** 2 + dc[None, :] ** 2) / (2 * sigma**2))
        blob[blob < np.exp(-4.5)] = 0.0
        np.maximum(heat[r0:r1, c0:c1], blob.astype(np.float32), out=heat[r0:r1, c0:c1])
    return heat


def render(scene: Scene, size: tuple[int, int]) -> SceneRender:
    """Ray-cast ``scene`` at ``size = (H, W)``."""
    height, width = size
    cam = scene.camera
    pixel_rays = camera_rays(scene, height, width)
    vertex_directions, vertex_pixels = vertex_rays(scene, height, width)
    # The rays towards the vertices ride along with the pixel rays: one cast for both.
    t_all, normal_all, instance_all = cast(
        scene, cam.position, np.concatenate([pixel_rays, vertex_directions])
    )
    pixels = height * width
    t, normal_world, instance = t_all[:pixels], normal_all[:pixels], instance_all[:pixels]
    # A vertex is at t = 1 on its ray; it is visible unless something (its own object
    # included: a convex object hides its far corners) is hit first.
    keypoints = vertex_pixels[t_all[pixels:] >= 1 - _KEYPOINT_VISIBILITY_TOLERANCE]
    points = cam.position + t[:, None] * pixel_rays

    classes = np.array([*ROOM_SURFACE_CLASSES, *scene.classes], dtype=np.int64)
    light = irradiance(points, normal_world, scene.lights, scene.ambient, scene.objects)
    radiance = _albedo_map(scene, points, instance) * light
    noise = np.random.default_rng(scene.noise_seed).standard_normal((height, width, 3))
    rgb = camera_response(
        radiance.reshape(height, width, 3), scene.exposure, noise, scene.noise_sigma
    )

    normal = (normal_world @ cam.rotation).reshape(height, width, 3)
    instance = instance.reshape(height, width)
    return SceneRender(
        rgb=rgb,
        seg=classes[instance],
        depth=t.reshape(height, width).astype(np.float32),
        normal=normal.astype(np.float32),
        keypoint=keypoint_heatmap(keypoints, height, width),
        edge=edge_map(instance, normal, EDGE_CREASE_DEGREES),
        instance=instance,
        intrinsics=cam.intrinsics(height, width),
        keypoints=keypoints,
    )
