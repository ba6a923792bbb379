"""Synthetic indoor scenes rendered in NumPy: the embedded default dataset.

A seeded generator draws a room (floor, four walls, ceiling), a few objects of five classes
(box, sphere, cylinder, cone, pyramid) that occlude each other, one or two point lights and a
camera; a vectorised ray caster renders the RGB image and a true target for every task. See
``docs/data.md``.
"""

from adapmtl.data.scenes.dataset import ScenesDataset, scene_rng
from adapmtl.data.scenes.layout import CLASS_NAMES, NUM_CLASSES, Scene, sample_scene
from adapmtl.data.scenes.render import SceneRender, render

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Scene",
    "SceneRender",
    "ScenesDataset",
    "render",
    "sample_scene",
    "scene_rng",
]
