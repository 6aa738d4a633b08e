"""A small real-photo folder for trying the converter, its tests and benchmarks without photos of your own:
scikit-image's bundled photos plus square crops of them (needs ``scikit-image``)."""
from __future__ import annotations

from pathlib import Path
from typing import List

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle", "camera")
# square crops: (left, top) as fractions of the free space, side as a fraction of the shorter side
CROPS = ((0.0, 0.0, 0.6), (1.0, 0.0, 0.6), (0.0, 1.0, 0.6), (1.0, 1.0, 0.6), (0.5, 0.5, 0.45))


def sample_photo(name: str):
    """A bundled scikit-image photo as a uint8 array (``stereo_motorcycle``: the left view)."""
    from skimage import data

    photo = getattr(data, name)()
    return photo[0] if isinstance(photo, tuple) else photo


def write_sample_photos(folder: Path, crops: int = len(CROPS)) -> List[Path]:
    """Write the six photos and ``crops`` (0..5) square crops of each as PNG files into ``folder``; return the paths."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in PHOTOS:
        image = Image.fromarray(sample_photo(name))
        paths.append(folder / f"{name}.png")
        image.save(paths[-1])
        width, height = image.size
        for index, (fx, fy, fs) in enumerate(CROPS[:crops]):
            side = int(min(width, height) * fs)
            left, top = int(fx * (width - side)), int(fy * (height - side))
            paths.append(folder / f"{name}_crop{index}.png")
            image.crop((left, top, left + side, top + side)).save(paths[-1])
    return paths
