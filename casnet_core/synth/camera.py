"""The pinhole camera of a street scene and the geometry it projects: box faces and upright billboards.

World points are (x right, h up from the ground, z forward) in metres; pixels are continuous
coordinates (pixel (u, v) covers [u, u+1) x [v, v+1)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


class BehindCamera(Exception):
    """Raised by a billboard that stands behind the near plane of a moving camera (it is not drawn)."""


@dataclass(frozen=True)
class Camera:
    """Pinhole camera at (0, height, z) looking along +z, with the square pixels of focal length ``focal`` and
    principal point (cx, cy) in continuous pixel coordinates.

    A still scene's camera stands at z = 0 and everything it draws lies in front of it. The camera of a
    drive moves along the street (``z``) and has a ``near`` plane: polygons are clipped to it and billboards
    behind it are skipped.
    """

    focal: float
    cx: float
    cy: float
    height: float
    z: float = 0.0
    near: float | None = None

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 intrinsics K in the convention of OpenCV and ROS ``CameraInfo`` (pixel centres on
        integer coordinates, so the principal point is half a pixel less than (cx, cy))."""
        return np.array([[self.focal, 0.0, self.cx - 0.5], [0.0, self.focal, self.cy - 0.5], [0.0, 0.0, 1.0]])

    def project(self, points: np.ndarray | Sequence) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates (u, v). All points must lie in front of the camera."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        scale = self.focal / (p[:, 2] - self.z)
        out = np.empty((len(p), 2))
        out[:, 0] = self.cx + p[:, 0] * scale
        out[:, 1] = self.cy + (self.height - p[:, 1]) * scale
        return out

    def point(self, x: float, h: float, z: float) -> tuple[float, float]:
        """One world point -> pixel (u, v)."""
        scale = self.focal / (z - self.z)
        return self.cx + x * scale, self.cy + (self.height - h) * scale

    def horizon_v(self, z: float) -> float:
        """Image row of the ground at world z."""
        return self.cy + self.focal * self.height / (z - self.z)

    def sees(self, z: float) -> bool:
        """Whether world depth z lies in front of the near plane (always, for a still camera)."""
        return self.near is None or z - self.z >= self.near

    def project_polygon(self, points: np.ndarray | Sequence) -> np.ndarray:
        """(K, 3) world polygon -> (K', 2) pixel polygon, clipped to the near plane (K' may be 0)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        if self.near is not None and (p[:, 2] - self.z < self.near).any():
            p = _clip_polygon(p, self.z + self.near)
        return self.project(p) if len(p) else np.empty((0, 2))

    def project_polygons(self, polygons: np.ndarray) -> np.ndarray | list[np.ndarray]:
        """(N, K, 3) world polygons -> (N, K, 2) pixel polygons, or, where the near plane clips some, a list of
        the (K', 2) polygons that remain."""
        n, k = polygons.shape[:2]
        if self.near is None:
            return self.project(polygons.reshape(-1, 3)).reshape(n, k, 2)
        in_front = polygons[..., 2] - self.z >= self.near
        whole = in_front.all(axis=1)
        if whole.all():
            return self.project(polygons.reshape(-1, 3)).reshape(n, k, 2)
        kept = list(self.project(polygons[whole].reshape(-1, 3)).reshape(-1, k, 2))
        cut = (self.project_polygon(p) for p in polygons[in_front.any(axis=1) & ~whole])
        return kept + [p for p in cut if len(p) >= 3]


def _clip_polygon(points: np.ndarray, z_min: float) -> np.ndarray:
    """(K, 3) polygon -> the part with z >= z_min (Sutherland-Hodgman against one plane), (K', 3)."""
    out = []
    for a, b in zip(points, np.roll(points, -1, axis=0)):
        a_in, b_in = a[2] >= z_min, b[2] >= z_min
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (b - a) * ((z_min - a[2]) / (b[2] - a[2])))
    return np.array(out).reshape(-1, 3)


# A planar rectangle: origin, first edge, second edge (world metres).
Face = tuple[str, np.ndarray, np.ndarray, np.ndarray]


def box_faces(cam_height: float, x0: float, x1: float, h0: float, h1: float, z0: float, z1: float) -> list[Face]:
    """The faces of an axis-aligned box that a camera at x = 0 sees (back face never)."""
    faces: list[Face] = []
    dx, dh, dz = np.array([x1 - x0, 0, 0.0]), np.array([0, h1 - h0, 0.0]), np.array([0, 0, z1 - z0])
    if x0 > 0:
        faces.append(("left", np.array([x0, h0, z0]), dz, dh))
    if x1 < 0:
        faces.append(("right", np.array([x1, h0, z0]), dz, dh))
    if h1 < cam_height:
        faces.append(("top", np.array([x0, h1, z0]), dx, dz))
    if h0 > cam_height:
        faces.append(("bottom", np.array([x0, h0, z0]), dx, dz))
    faces.append(("front", np.array([x0, h0, z0]), dx, dh))
    return faces


_RECT_A = np.array([0, 1, 1, 0])
_RECT_B = np.array([2, 2, 3, 3])


def face_rects(face: Face, rects: np.ndarray | Sequence) -> np.ndarray:
    """Sub-rectangles (a0, a1, b0, b1) in face coordinates (0..1 along each edge) -> (N, 4, 3) corners."""
    _, origin, e1, e2 = face
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    a = r[:, _RECT_A][..., None]
    b = r[:, _RECT_B][..., None]
    return origin + a * e1 + b * e2


class Billboard:
    """A vertical plane facing the camera at ground point (x, z): shapes are given in metres (dx right,
    dh up from the ground), mirrored when ``mirror``. Raises ``BehindCamera`` behind the near plane."""

    def __init__(self, cam: Camera, x: float, z: float, mirror: bool = False) -> None:
        if not cam.sees(z):
            raise BehindCamera
        self.scale = cam.focal / (z - cam.z)
        self.u0, self.v0 = cam.point(x, 0.0, z)
        self.scale_x = -self.scale if mirror else self.scale

    def point(self, dx: float, dh: float) -> tuple[float, float]:
        return self.u0 + self.scale_x * dx, self.v0 - self.scale * dh

    def pts(self, metres: Sequence) -> np.ndarray:
        """(N, 2) pixel coordinates of N (dx, dh) points."""
        return np.array([(self.u0 + self.scale_x * dx, self.v0 - self.scale * dh) for dx, dh in metres])

    def px(self, metres: float) -> float:
        return metres * self.scale

    def limb(self, p: Sequence[float], q: Sequence[float], width_p: float, width_q: float | None = None) -> np.ndarray:
        """A quadrilateral from p to q, at least one pixel wide."""
        ax, ay = self.point(*p)
        bx, by = self.point(*q)
        norm = max(math.hypot(bx - ax, by - ay), 1e-6)
        nx, ny = (ay - by) / norm, (bx - ax) / norm
        wp = max(width_p * self.scale, 1.0) / 2.0
        wq = max((width_p if width_q is None else width_q) * self.scale, 1.0) / 2.0
        return np.array([(ax + nx * wp, ay + ny * wp), (bx + nx * wq, by + ny * wq),
                         (bx - nx * wq, by - ny * wq), (ax - nx * wp, ay - ny * wp)])

    def rect(self, x0: float, x1: float, h0: float, h1: float) -> np.ndarray:
        return self.pts([(x0, h0), (x1, h0), (x1, h1), (x0, h1)])

