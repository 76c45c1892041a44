"""Colour palettes, deliberately overlapping between classes so that colour alone does not give the class."""

from __future__ import annotations

import colorsys
from typing import Sequence

import numpy as np


def hsv(
    rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]
) -> np.ndarray:
    """A random colour, uniform in the given hue, saturation and value ranges (hue wraps around 1)."""
    u = rng.random(3)
    h = (hue[0] + u[0] * (hue[1] - hue[0])) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, sat[0] + u[1] * (sat[1] - sat[0]), val[0] + u[2] * (val[1] - val[0]))
    return np.array([r, g, b]) * 255.0


def paint_color(rng: np.random.Generator) -> np.ndarray:
    """Vehicle paint and clothes: many greys, whites and blacks, plus any hue."""
    if rng.random() < 0.45:
        return hsv(rng, (0.0, 1.0), (0.0, 0.1), (0.06, 0.95))
    return hsv(rng, (0.0, 1.0), (0.25, 0.9), (0.15, 0.9))


def building_color(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng, (0.0, 1.0), (0.0, 0.45), (0.25, 0.9))


def ground_color(rng: np.random.Generator, sat: float, val: tuple[float, float]) -> np.ndarray:
    return hsv(rng, (0.0, 1.0), (0.0, sat), val)


def green(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng, (0.1, 0.42), (0.25, 0.85), (0.1, 0.6))


def skin(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng, (0.02, 0.1), (0.2, 0.65), (0.25, 0.95))


def hair(rng: np.random.Generator) -> np.ndarray:
    return hsv(rng, (0.02, 0.12), (0.0, 0.7), (0.05, 0.85))


def glass(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.2:  # a reflection of the sky
        return hsv(rng, (0.5, 0.65), (0.0, 0.4), (0.5, 0.9))
    return hsv(rng, (0.5, 0.7), (0.0, 0.4), (0.04, 0.35))



def scaled(color: Sequence[float], factor: float) -> np.ndarray:
    return np.clip(np.asarray(color, dtype=np.float64) * factor, 0.0, 255.0)


def mix(a: Sequence[float], b: Sequence[float], t: float) -> np.ndarray:
    return (1.0 - t) * np.asarray(a, dtype=np.float64) + t * np.asarray(b, dtype=np.float64)
