"""Procedural backgrounds: grass, street, indoor, beach, sky. Each has a ground region below a horizon line."""

from __future__ import annotations

import cv2
import numpy as np


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth value noise in [-1, 1]: random values on a coarse grid, bicubically upsampled."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _vertical_gradient(h: int, w: int, top: tuple, bottom: tuple) -> np.ndarray:
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return (np.array(top, np.float32) * (1 - t) + np.array(bottom, np.float32) * t) * np.ones((1, w, 1), np.float32)


def _sky(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    top = np.array([70, 130, 215]) + rng.uniform(-20, 20, 3)
    bottom = np.array([175, 210, 240]) + rng.uniform(-15, 15, 3)
    img = _vertical_gradient(h, w, tuple(top), tuple(bottom))
    clouds = np.clip(_noise(rng, h, w, 4) * 1.6 - 0.5, 0.0, 1.0)[..., None]
    return img * (1 - clouds * 0.8) + 245.0 * clouds * 0.8


def render_background(kind: str, rng: np.random.Generator, h: int, w: int, horizon: float) -> np.ndarray:
    """An RGB float32 image (h, w, 3) in [0, 255] with the ground below row ``horizon`` (a fraction of h)."""
    hy = int(round(np.clip(horizon, 0.0, 1.0) * h))
    fine = _noise(rng, h, w, max(8, w // 6))[..., None]
    if kind == "sky":
        return _sky(rng, h, w)
    if kind == "indoor":
        wall_rgb = np.array(rng.choice([(214, 200, 176), (190, 205, 215), (222, 222, 214), (200, 180, 190)]), np.float32)
        img = np.empty((h, w, 3), np.float32)
        img[:] = wall_rgb + rng.uniform(-12, 12, 3)
        floor = np.array([150, 110, 72], np.float32) + rng.uniform(-20, 20, 3)
        rows = h - hy
        if rows > 0:
            plank = (np.arange(rows)[:, None] * 0 + (np.arange(w)[None, :] // max(3, w // 10)) % 2).astype(np.float32)
            img[hy:] = floor * (0.92 + 0.08 * plank[..., None])
            img[hy:hy + max(1, h // 96)] = floor * 0.6  # skirting line
        return img + fine * 4
    sky = _sky(rng, h, w)
    img = sky.copy()
    rows = h - hy
    if rows <= 0:
        return img
    ground_noise = _noise(rng, rows, w, max(6, w // 10))[..., None]
    depth = np.linspace(0.85, 1.1, rows, dtype=np.float32)[:, None, None]
    if kind == "grass":
        base = np.array([70, 140, 55], np.float32) + rng.uniform(-15, 15, 3)
        blades = rng.uniform(-1, 1, size=(rows, w, 1)).astype(np.float32)
        img[hy:] = base * depth + ground_noise * 18 + blades * 14
    elif kind == "street":
        base = np.array([96, 96, 100], np.float32) + rng.uniform(-12, 12, 1)
        grit = rng.uniform(-1, 1, size=(rows, w, 1)).astype(np.float32)
        img[hy:] = base * depth + ground_noise * 6 + grit * 7
        lane_y = hy + rows // 2
        dash = (np.arange(w) // max(4, w // 8)) % 2 == 0
        lh = max(1, h // 96)
        img[lane_y:lane_y + lh, dash] = (225, 215, 150)
        sidewalk = max(1, rows // 8)
        img[hy:hy + sidewalk] = np.array([165, 160, 150], np.float32) + ground_noise[:sidewalk] * 6
    elif kind == "beach":
        sea_rows = max(1, rows // 4)
        sea = np.array([40, 110, 170], np.float32) + rng.uniform(-15, 15, 3)
        img[hy:hy + sea_rows] = sea + ground_noise[:sea_rows] * 10
        sand = np.array([222, 200, 150], np.float32) + rng.uniform(-12, 12, 3)
        img[hy + sea_rows:] = sand * depth[sea_rows:] + ground_noise[sea_rows:] * 10
    else:
        raise ValueError(f"unknown background {kind!r}")
    return img + fine * 3
