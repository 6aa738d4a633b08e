"""``slidelite web``: the same model files classify in a phone's browser.

:func:`build_site` writes a self-contained static site (page, model, metadata as JSON, onnxruntime-web or
MediaPipe Tasks Web copied from pinned npm packages); :mod:`slidelite.web.serve` serves it on the local
network (HTTP or self-signed HTTPS) with a QR code. The page's JavaScript preprocessing (``assets/
preprocess.js``) implements :mod:`slidelite.preprocess` from the same metadata. See ``docs/web.md``.
"""
from __future__ import annotations

from .site import SiteBuild, build_site

__all__ = ["SiteBuild", "build_site"]
