"""Images in [-1, 1] to uint8 pixels, PNG grids and per-seed PNG files (EDM's conventions)."""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from full.store.atomic import atomic_write
from full.store.latent import PixelEncoder


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW float -> NHWC uint8 with EDM's rounding (`PixelEncoder.decode`)."""
    return PixelEncoder().decode(x).permute(0, 2, 3, 1).cpu().numpy()


def _pil(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(pixels[:, :, 0], "L") if pixels.shape[2] == 1 else Image.fromarray(pixels, "RGB")


def grid(pixels: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile NHWC uint8 images into one HWC image, `columns` wide (default: square-ish)."""
    n, h, w, c = pixels.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for i, image in enumerate(pixels):
        r, col = divmod(i, columns)
        canvas[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return canvas


def enlarge(pixels: np.ndarray, min_size: int = 64) -> np.ndarray:
    """Nearest-neighbour upscaling of NHWC images by a whole factor, so each is at least `min_size` pixels."""
    scale = max(1, min_size // pixels.shape[1])
    return pixels.repeat(scale, axis=1).repeat(scale, axis=2)


def save_png(image: np.ndarray, path: str | os.PathLike) -> None:
    """Write one HWC uint8 image as PNG atomically."""
    atomic_write(path, lambda tmp: _pil(image).save(tmp, format="PNG"))
