"""Surface appearance: procedural textures, Lambertian shading with shadows, camera response.

Textures are evaluated at 3D surface points (object-local coordinates for objects, world
coordinates for the room), so patterns stick to surfaces and follow perspective.
"""

from __future__ import annotations

import numpy as np

from adapmtl.data.scenes.geometry import Placed
from adapmtl.data.scenes.layout import Light, Material

_SHADOW_SLACK = 1e-5
_LATTICE = 16  # the noise lattice repeats every 16 cells (several metres: not visible)


def value_noise(points: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 3D value noise in [0, 1]: trilinear interpolation (smoothstep weights) of random
    values on the integer lattice, drawn from ``seed``."""
    table = np.random.default_rng(seed).random((_LATTICE,) * 3)
    base = np.floor(points)
    frac = points - base
    w = frac * frac * (3 - 2 * frac)
    cell = base.astype(np.int64)
    lo = cell & (_LATTICE - 1)  # modulo for a power of two, also for negative coordinates
    hi = (cell + 1) & (_LATTICE - 1)
    result = np.zeros(len(points))
    for x, wx in ((lo[:, 0], 1 - w[:, 0]), (hi[:, 0], w[:, 0])):
        for y, wy in ((lo[:, 1], 1 - w[:, 1]), (hi[:, 1], w[:, 1])):
            wxy = wx * wy
            result += wxy * (
                (1 - w[:, 2]) * table[x, y, lo[:, 2]] + w[:, 2] * table[x, y, hi[:, 2]]
            )
    return result


def pattern(material: Material, points: np.ndarray) -> np.ndarray:
    """Mixing weight in [0, 1] between the material's two colours at ``points`` [P, 3]."""
    scaled = points * material.frequency
    if material.texture == "stripes":
        return 0.5 + 0.5 * np.sin(2 * np.pi * (scaled @ material.axis))
    if material.texture == "checker":
        return (np.floor(scaled).astype(np.int64).sum(axis=1) % 2).astype(np.float64)
    if material.texture == "noise":
        fine = value_noise(2.0 * scaled + 17.0, material.seed + 1)
        return 0.65 * value_noise(scaled, material.seed) + 0.35 * fine
    return np.zeros(len(points))


def albedo(material: Material, points: np.ndarray) -> np.ndarray:
    weight = pattern(material, points)[:, None]
    return (1 - weight) * material.colour + weight * material.second


def in_shadow(points: np.ndarray, light: Light, objects: list[Placed]) -> np.ndarray:
    """Whether the segment from the light to each surface point is blocked by an object.

    Rays are cast from the light (one origin for all rays, which makes culling cheap) with
    t = 1 at the surface point; a hit before 1 - SHADOW_SLACK is a blocker.
    """
    directions = points - light.position
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    blocked = np.zeros(len(points), dtype=bool)
    for obj in objects:
        candidates = np.flatnonzero(obj.may_hit(light.position, unit) & ~blocked)
        if candidates.size:
            t, _ = obj.intersect(light.position, directions[candidates])
            blocked[candidates[t < 1.0 - _SHADOW_SLACK]] = True
    return blocked


def irradiance(
    points: np.ndarray,
    normals: np.ndarray,
    lights: list[Light],
    ambient: float,
    objects: list[Placed],
) -> np.ndarray:
    """Lambertian irradiance [P, 3]: ambient + sum over lights of I cos(theta) / (1 + k d^2),
    zero where the light is behind the surface or blocked."""
    total = np.full((len(points), 3), ambient)
    for light in lights:
        to_light = light.position - points
        distance2 = np.einsum("ij,ij->i", to_light, to_light)
        cosine = np.einsum("ij,ij->i", normals, to_light) / np.sqrt(distance2)
        lit = cosine > 0
        lit[lit] &= ~in_shadow(points[lit], light, objects)
        strength = np.where(lit, cosine, 0.0) / (1 + light.falloff * distance2)
        total += strength[:, None] * light.intensity
    return total


def camera_response(
    radiance: np.ndarray, exposure: float, noise: np.ndarray, noise_sigma: float
) -> np.ndarray:
    """Auto-exposure (98th percentile of luminance -> 0.9, times ``exposure``), gamma 2.2,
    additive Gaussian noise, 8-bit quantisation. ``radiance`` [..., 3] linear; returns uint8."""
    luminance = radiance @ np.array([0.2126, 0.7152, 0.0722])
    scale = exposure * 0.9 / max(float(np.percentile(luminance, 98)), 1e-6)
    display = np.clip(radiance * scale, 0.0, 1.0) ** (1 / 2.2)
    display = display + noise_sigma * noise
    return np.round(np.clip(display, 0.0, 1.0) * 255).astype(np.uint8)
