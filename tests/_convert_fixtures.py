"""Shared fixtures of the converter tests."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from slidelite.convert.samples import write_sample_photos


def photo_folder_fixture(crops: int) -> Callable[..., Path]:
    """A module-scoped fixture: a folder of the six scikit-image photos plus ``crops`` square crops of each."""

    @pytest.fixture(scope="module")
    def photos(tmp_path_factory) -> Path:
        folder = tmp_path_factory.mktemp("photos")
        write_sample_photos(folder, crops=crops)
        return folder

    return photos
