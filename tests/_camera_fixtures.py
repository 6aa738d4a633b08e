"""Inputs for the camera app tests and soak benchmark: a video file and an image folder made of real photos
(scikit-image's bundled pictures), written with OpenCV and Pillow."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np
from PIL import Image

FRAME_SIZE = (320, 240)  # width, height
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def photo_frames(names: Sequence[str] = PHOTOS, size: tuple = FRAME_SIZE) -> List[np.ndarray]:
    """The named scikit-image photos as RGB uint8 frames of ``size``."""
    from skimage import data

    frames = []
    for name in names:
        image = getattr(data, name)()
        frames.append(np.asarray(Image.fromarray(image).convert("RGB").resize(size, Image.Resampling.BILINEAR)))
    return frames


def make_video(path: "str | Path", frames_per_photo: int = 12, fps: float = 30.0,
               names: Sequence[str] = PHOTOS, size: tuple = FRAME_SIZE) -> Path:
    """Write an MPEG-4 video of ``size`` cycling through the photos (``frames_per_photo`` frames each)."""
    import cv2

    path = Path(path)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for frame in photo_frames(names, size):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        for _ in range(frames_per_photo):
            writer.write(bgr)
    writer.release()
    return path


def make_image_folder(folder: "str | Path", names: Sequence[str] = PHOTOS) -> Path:
    """Write the photos as ``00_chelsea.jpg``, ``01_coffee.png``, ... (JPEG and PNG alternate); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, frame) in enumerate(zip(names, photo_frames(names))):
        Image.fromarray(frame).save(folder / f"{i:02d}_{name}.{'jpg' if i % 2 == 0 else 'png'}")
    return folder
