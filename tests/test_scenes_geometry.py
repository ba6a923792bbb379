"""Geometry of the synthetic scenes, checked against independent analytic computations."""

from __future__ import annotations

import numpy as np
import pytest

from adapmtl.data.scenes import CLASS_NAMES, NUM_CLASSES, ScenesDataset
from adapmtl.data.scenes.geometry import Box, Cone, Cylinder, Placed, Pyramid, Room, Sphere
from adapmtl.data.scenes.layout import Camera, Light, Material, Scene, look_at
from adapmtl.data.scenes.render import KEYPOINT_SIGMA, render

ROOM = Room(width=6.0, height=3.0, depth=6.0)
PLAIN = Material(
    colour=np.array([0.5, 0.5, 0.5]),
    second=np.array([0.5, 0.5, 0.5]),
    texture="plain",
    frequency=1.0,
    axis=np.array([1.0, 0.0, 0.0]),
    seed=0,
)


def make_scene(camera: Camera, objects=(), classes=()) -> Scene:
    return Scene(
        room=ROOM,
        camera=camera,
        objects=list(objects),
        classes=list(classes),
        room_materials=[PLAIN] * 6,
        object_materials=[PLAIN] * len(objects),
        lights=[Light(np.array([3.0, 2.8, 3.0]), np.ones(3), 0.05)],
        ambient=0.2,
        exposure=1.0,
        noise_sigma=0.0,
        noise_seed=0,
    )


def level_camera(height: float, hfov_degrees: float = 60.0) -> Camera:
    """At (3, height, 5), looking along -z (the camera frame is the world frame)."""
    position = np.array([3.0, height, 5.0])
    return Camera(
        position, look_at(position, position - np.array([0.0, 0.0, 1.0])), np.radians(hfov_degrees)
    )


def pixel_directions(shape: tuple[int, int], hfov: float) -> tuple[np.ndarray, ...]:
    """Independent pinhole model: camera-frame ray (dx, dy, -1) through each pixel centre."""
    height, width = shape
    f = (width / 2) / np.tan(hfov / 2)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    return (cols - width / 2) / f, -(rows - height / 2) / f


def test_class_names() -> None:
    assert NUM_CLASSES == 8 == len(CLASS_NAMES)
    assert CLASS_NAMES[:3] == ("floor", "wall", "ceiling")


def test_empty_room_depth_labels_and_normals_match_the_pinhole_model() -> None:
    h, shape = 1.2, (47, 63)
    view = render(make_scene(level_camera(h)), shape)
    dx, dy = pixel_directions(shape, np.radians(60.0))
    with np.errstate(divide="ignore"):
        # Distance (z-depth) to each room plane along the ray, camera at (3, h, 5).
        t_floor = np.where(dy < 0, h / -dy, np.inf)
        t_ceiling = np.where(dy > 0, (3.0 - h) / dy, np.inf)
        t_side = np.where(dx != 0, 3.0 / np.abs(dx), np.inf)
    t_back = np.full(shape, 5.0)
    stack = np.stack([t_floor, t_ceiling, t_side, t_back])
    np.testing.assert_allclose(view.depth, stack.min(axis=0), rtol=1e-5)
    nearest = stack.argmin(axis=0)
    expected_seg = np.array([0, 2, 1, 1])[nearest]  # floor, ceiling, wall, wall
    assert (view.seg == expected_seg).all()
    expected_normals = np.array([[0, 1, 0], [0, -1, 0], [0, 0, 0], [0, 0, 1]], dtype=float)
    floor_or_back = (nearest == 0) | (nearest == 3) | (nearest == 1)
    np.testing.assert_allclose(
        view.normal[floor_or_back], expected_normals[nearest][floor_or_back], atol=1e-6
    )
    side = nearest == 2
    np.testing.assert_allclose(view.normal[side][:, 0], -np.sign(dx[side]), atol=1e-6)


SHAPES = {
    # shape, class, distance from the camera to the visible surface on the central ray,
    # expected normal there (camera frame), camera height
    "box": (Box(0.3, 0.4, 0.8), "box", 3.0 - 0.4, (0.0, 0.0, 1.0), 0.4),
    "sphere": (Sphere(0.5), "sphere", 3.0 - 0.5, (0.0, 0.0, 1.0), 0.5),
    "cylinder": (Cylinder(0.35, 1.0), "cylinder", 3.0 - 0.35, (0.0, 0.0, 1.0), 0.5),
    "cone": (Cone(0.4, 1.0), "cone", 3.0 - 0.2, (0.0, 0.4, 1.0), 0.5),
    "pyramid": (Pyramid(0.4, 1.0), "pyramid", 3.0 - 0.2, (0.0, 0.4, 1.0), 0.5),
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_each_shape_on_the_central_ray(name: str) -> None:
    shape, cls, distance, normal, eye = SHAPES[name]
    obj = Placed(shape, np.array([3.0, 0.0, 2.0]), 0.0)
    view = render(make_scene(level_camera(eye), [obj], [CLASS_NAMES.index(cls)]), (33, 33))
    centre = (16, 16)  # odd size: the central pixel's ray is the optical axis
    assert view.seg[centre] == CLASS_NAMES.index(cls)
    assert view.depth[centre] == pytest.approx(distance, rel=1e-5)
    np.testing.assert_allclose(
        view.normal[centre], np.array(normal) / np.linalg.norm(normal), atol=1e-5
    )


def test_sphere_silhouette_is_the_cone_it_subtends() -> None:
    radius, shape = 0.5, (41, 41)
    obj = Placed(Sphere(radius), np.array([3.0, 0.0, 2.0]), 0.0)
    view = render(make_scene(level_camera(radius), [obj], [4]), shape)
    dx, dy = pixel_directions(shape, np.radians(60.0))
    angle = np.arccos(1.0 / np.sqrt(dx**2 + dy**2 + 1.0))  # angle to the optical axis
    half_angle = np.arcsin(radius / 3.0)
    pixel_angle = np.radians(60.0) / shape[1]
    assert (view.seg[angle < half_angle - pixel_angle] == 4).all()
    assert (view.seg[angle > half_angle + pixel_angle] != 4).all()


def test_yawed_box_front_face_normal_rotates_with_it() -> None:
    yaw = np.radians(30.0)
    obj = Placed(Box(0.4, 0.4, 0.8), np.array([3.0, 0.0, 2.0]), yaw)
    view = render(make_scene(level_camera(0.4), [obj], [3]), (33, 33))
    # Local +z face, rotated by the yaw about y: (sin yaw, 0, cos yaw).
    np.testing.assert_allclose(view.normal[16, 16], [np.sin(yaw), 0.0, np.cos(yaw)], atol=1e-6)


def test_occlusion_nearer_object_wins() -> None:
    far = Placed(Box(1.0, 0.2, 1.5), np.array([3.0, 0.0, 1.0]), 0.0)
    near = Placed(Sphere(0.3), np.array([3.0, 0.0, 3.0]), 0.0)
    view = render(make_scene(level_camera(0.3), [far, near], [3, 4]), (33, 33))
    assert view.seg[16, 16] == 4
    assert view.depth[16, 16] == pytest.approx(2.0 - 0.3, rel=1e-5)
    assert (view.seg == 3).any()  # the box is still visible around the sphere


def test_keypoints_are_the_visible_box_corners() -> None:
    box = Placed(Box(0.3, 0.3, 0.5), np.array([3.0, 0.0, 2.0]), 0.0)
    position = np.array([3.2, 1.4, 4.5])
    camera = Camera(position, look_at(position, np.array([3.0, 0.25, 2.0])), np.radians(50.0))
    shape = (96, 128)
    view = render(make_scene(camera, [box], [3]), shape)
    corners = box.world_vertices()
    # The camera is above the top face and in front of the +z face: the two bottom corners
    # at the back (z = 1.7, y = 0) are hidden, the other six are visible.
    hidden = (corners[:, 1] == 0.0) & (corners[:, 2] < 2.0)
    local = (corners - position) @ camera.rotation
    f = (shape[1] / 2) / np.tan(np.radians(50.0) / 2)
    col = shape[1] / 2 + f * local[:, 0] / -local[:, 2]
    row = shape[0] / 2 - f * local[:, 1] / -local[:, 2]
    expected = np.stack([row, col], axis=1)[~hidden]
    found = view.keypoints[np.lexsort(view.keypoints.T)]
    np.testing.assert_allclose(found, expected[np.lexsort(expected.T)], atol=1e-6)
    sigma = KEYPOINT_SIGMA * min(shape)
    for r, c in expected:
        peak = np.exp(-(0.5**2 + 0.5**2) / (2 * sigma**2))
        assert view.keypoint[int(r), int(c)] >= peak - 1e-6
    assert view.keypoint.max() <= 1.0 and view.keypoint.min() >= 0.0


@pytest.fixture(scope="module")
def random_views():
    scenes = ScenesDataset(12, size=(64, 80), seed=3)
    return [scenes.render(i) for i in range(len(scenes))]


def test_targets_are_well_formed(random_views) -> None:
    for view in random_views:
        assert view.rgb.dtype == np.uint8 and view.rgb.shape == (64, 80, 3)
        assert view.seg.dtype == np.int64 and view.seg.min() >= 0 and view.seg.max() < 8
        assert np.isfinite(view.depth).all() and (view.depth > 0).all()
        np.testing.assert_allclose(np.linalg.norm(view.normal, axis=2), 1.0, atol=1e-5)
        assert set(np.unique(view.edge)) <= {0.0, 1.0}
        assert view.keypoint.min() >= 0.0 and view.keypoint.max() <= 1.0
        # Visible surfaces face the camera: the normal points against the viewing ray.
        fx, fy, cx, cy = view.intrinsics
        rows, cols = np.mgrid[0:64, 0:80] + 0.5
        rays = np.stack([(cols - cx) / fx, -(rows - cy) / fy, -np.ones_like(rows)], axis=2)
        assert (np.einsum("hwc,hwc->hw", rays, view.normal) < 1e-6).all()


def backprojected_normals(view) -> tuple[np.ndarray, np.ndarray]:
    """Normals from the depth map alone: cross product of the 3D offsets to the right and
    lower neighbours; and the mask of pixels whose three points share one plane."""
    fx, fy, cx, cy = view.intrinsics
    height, width = view.depth.shape
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    z = view.depth.astype(np.float64)
    points = np.stack([(cols - cx) / fx * z, -(rows - cy) / fy * z, -z], axis=2)
    right = points[:-1, 1:] - points[:-1, :-1]
    down = points[1:, :-1] - points[:-1, :-1]
    normals = np.cross(down, right)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    n = view.normal.astype(np.float64)
    same_plane = (
        (view.instance[:-1, :-1] == view.instance[:-1, 1:])
        & (view.instance[:-1, :-1] == view.instance[1:, :-1])
        & (np.abs(n[:-1, :-1] - n[:-1, 1:]).max(axis=2) < 1e-6)
        & (np.abs(n[:-1, :-1] - n[1:, :-1]).max(axis=2) < 1e-6)
    )
    return normals, same_plane


def test_normals_agree_with_depth_gradients_on_planar_surfaces(random_views) -> None:
    checked_floor = 0
    for view in random_views:
        from_depth, planar = backprojected_normals(view)
        target = view.normal[:-1, :-1]
        cosine = np.einsum("hwc,hwc->hw", from_depth, target)
        angles = np.degrees(np.arccos(np.clip(cosine[planar], -1, 1)))
        assert np.percentile(angles, 99) < 1.0, np.percentile(angles, 99)
        checked_floor += int((planar & (view.seg[:-1, :-1] == 0)).sum())
    assert checked_floor > 5000


def test_edges_lie_where_labels_depth_or_normals_jump(random_views) -> None:
    for view in random_views:
        edge = view.edge.astype(bool)
        label_jump_h = view.seg[:, 1:] != view.seg[:, :-1]
        label_jump_v = view.seg[1:, :] != view.seg[:-1, :]
        # Every label change is marked on both sides.
        assert edge[:, 1:][label_jump_h].all() and edge[:, :-1][label_jump_h].all()
        assert edge[1:, :][label_jump_v].all() and edge[:-1, :][label_jump_v].all()
        # Creases (same label, normals more than 45 degrees apart) are marked too.
        cos_h = np.einsum("...c,...c->...", view.normal[:, 1:], view.normal[:, :-1])
        crease_h = (cos_h < np.cos(np.radians(45))) & ~label_jump_h
        assert edge[:, 1:][crease_h].all() and edge[:, :-1][crease_h].all()
        # Every edge pixel has a 4-neighbour across a label, depth or crease discontinuity.
        explained = np.zeros_like(edge)
        for axis in (0, 1):
            a = (slice(1, None), slice(None)) if axis == 0 else (slice(None), slice(1, None))
            b = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
            cosine = np.einsum("...c,...c->...", view.normal[a], view.normal[b])
            relative = np.abs(view.depth[a] - view.depth[b]) / np.minimum(
                view.depth[a], view.depth[b]
            )
            jump = (
                (view.seg[a] != view.seg[b]) | (cosine < np.cos(np.radians(30))) | (relative > 0.02)
            )
            explained[a] |= jump
            explained[b] |= jump
        assert explained[edge].all()
        assert 0.02 < edge.mean() < 0.5


def test_all_classes_occur_and_tasks_carry_signal(random_views) -> None:
    seen = set()
    for view in random_views:
        seen |= set(np.unique(view.seg).tolist())
    assert {0, 1, 3, 4, 5, 6, 7} <= seen  # the ceiling is in view only sometimes
    assert sum(len(view.keypoints) for view in random_views) > 3 * len(random_views)
