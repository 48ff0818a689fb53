"""Videos (GIF) and image grids for people to look at; every file is written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Sequence

import imageio.v2 as imageio
import numpy as np
from PIL import Image, ImageDraw

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str, write_fn, suffix: str = "") -> str:
  """Calls write_fn(tmp_path) on a temporary file beside `path`, then renames it into place."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=suffix or os.path.splitext(path)[1])
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs get the usual permissions
  try:
    write_fn(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def write_text(path: str, text: str) -> str:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  return atomic_write(path, write)


def write_npz(path: str, arrays) -> str:
  """Uncompressed .npz, synced to disk before it is renamed into place."""
  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
  return atomic_write(path, write, suffix=".tmp")  # a killed write leaves no stray *.npz beside it


def write_json(path: str, obj) -> str:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2)
      f.write("\n")
  return atomic_write(path, write)


def label(image: np.ndarray, text: str, height: int = 12) -> np.ndarray:
  """uint8[H, W, 3] -> uint8[H + height, W, 3] with `text` on a dark strip above."""
  strip = Image.new("RGB", (image.shape[1], height), (20, 20, 20))
  ImageDraw.Draw(strip).text((2, 0), text, fill=(235, 235, 235))
  return np.concatenate([np.asarray(strip), image], axis=0)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
  """Nearest-neighbour upscaling, so small frames stay crisp in viewers."""
  return image.repeat(factor, axis=-3).repeat(factor, axis=-2) if factor > 1 else image


def grid(images: Sequence[Sequence[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Rows of equally sized uint8[H, W, 3] images -> one image, separated by `pad` white pixels."""
  rows = []
  for row in images:
    parts = []
    for im in row:
      parts += [im, np.full((im.shape[0], pad, 3), 255, np.uint8)]
    rows += [np.concatenate(parts[:-1], axis=1)]
  width = max(r.shape[1] for r in rows)
  rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
  out = []
  for r in rows:
    out += [r, np.full((pad, width, 3), 255, np.uint8)]
  return np.concatenate(out[:-1], axis=0)


def write_png(path: str, image: np.ndarray) -> str:
  return atomic_write(path, lambda tmp: imageio.imwrite(tmp, image, format="png"))


def write_gif(path: str, frames: np.ndarray, fps: int = 10) -> str:
  """frames uint8[T, H, W, 3] -> an endlessly looping GIF."""
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames must be uint8[T, H, W, 3], got {frames.dtype}{list(frames.shape)}")
  return atomic_write(path, lambda tmp: imageio.mimsave(tmp, list(frames), format="gif",
                                                        duration=1000 / fps, loop=0))
