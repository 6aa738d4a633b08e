"""The browser runtimes, taken from npm packages at build time (never vendored into the wheel).

Each runtime is one npm package pinned to an exact version and its registry ``integrity`` (sha512). The
package tarball is downloaded from the npm registry over HTTPS with :mod:`urllib` (no node needed),
verified, and cached under :func:`cache_dir`; ``slidelite web`` copies only the files a site needs out of it.
An already installed ``node_modules`` folder (``--runtime-dir``) serves offline builds instead.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

from .. import __version__
from ..errors import SlideliteError

DEFAULT_REGISTRY = "https://registry.npmjs.org"
REGISTRY_ENV = "SLIDELITE_NPM_REGISTRY"
CACHE_ENV = "SLIDELITE_WEB_CACHE"
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


class RuntimeDownloadError(SlideliteError):
    """A browser runtime package cannot be downloaded, fails its integrity check, or is not installed."""


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm package.

    Attributes:
        name: the npm name (``@scope/name`` allowed).
        version: the exact version.
        integrity: the registry's ``dist.integrity`` (``sha512-<base64>``) of the tarball.
    """

    name: str
    version: str
    integrity: str

    @property
    def tarball_name(self) -> str:
        """The tarball's file name in the registry and in the cache (``tasks-vision-1.1.0.tgz``)."""
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def tarball_url(self, registry: str) -> str:
        """``<registry>/<name>/-/<tarball>``, the registry's download address of the tarball."""
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball_name}"

    @property
    def install_hint(self) -> str:
        """The npm command that installs exactly this package."""
        return f"npm install {self.name}@{self.version}"


ONNXRUNTIME_WEB = NpmPackage(
    "onnxruntime-web", "1.31.1",
    "sha512-5GeH+bWQ+HxM10z7erGlsWqryrwMbSvm/1tkIsKTT48g0fI19VXVVC435t4t7VsPdSQeS7NmuZPXrQ73k82URw==")
MEDIAPIPE_TASKS_VISION = NpmPackage(
    "@mediapipe/tasks-vision", "1.1.0",
    "sha512-ZJqh0wMKOINorfSffvDAxzyO1//c+FiG3IkzOdNDnLqvBB3DbMfj0bB/tys2SNf9S914sgoIbIpF4HTOi336cg==")


def cache_dir(override: Optional[str] = None) -> Path:
    """Where verified tarballs are kept: ``override``, else ``$SLIDELITE_WEB_CACHE``, else
    ``$XDG_CACHE_HOME/slidelite/web`` (``~/.cache/slidelite/web``)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "slidelite" / "web"


def registry_url() -> str:
    """The npm registry: ``$SLIDELITE_NPM_REGISTRY`` or :data:`DEFAULT_REGISTRY`."""
    return os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def _digest_matches(path: Path, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode("ascii") == expected


def fetch_tarball(package: NpmPackage, cache: Optional[str] = None) -> Path:
    """The verified tarball of ``package`` in the cache, downloaded first when it is not there yet.

    Raises:
        RuntimeDownloadError: the registry cannot be reached, or the download fails its integrity check.
    """
    folder = cache_dir(cache)
    path = folder / package.tarball_name
    if path.is_file() and _digest_matches(path, package.integrity):
        return path
    url = package.tarball_url(registry_url())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        request = urllib.request.Request(url, headers={"User-Agent": f"slidelite/{__version__}"})
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response, \
                tempfile.NamedTemporaryFile(dir=folder, prefix=".download-", delete=False) as out:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RuntimeDownloadError(
            f"cannot download {package.name} {package.version} from {url} ({reason}): connect to the internet "
            f"once (it is cached in {folder}), or pass --runtime-dir node_modules after `{package.install_hint}`"
        ) from None
    temp = Path(out.name)
    if not _digest_matches(temp, package.integrity):
        temp.unlink()
        raise RuntimeDownloadError(f"{url}: the download does not match its pinned sha512 integrity; "
                                   "retry, or check the registry set in $" + REGISTRY_ENV)
    temp.chmod(0o644)
    os.replace(temp, path)
    return path


def package_source(package: NpmPackage, runtime_dir: Optional[str] = None, cache: Optional[str] = None) -> Path:
    """Where ``package``'s files come from: ``runtime_dir/<name>`` (an installed ``node_modules``, which must
    hold exactly the pinned version) when given, else the verified tarball (:func:`fetch_tarball`).

    Raises:
        RuntimeDownloadError: the package cannot be downloaded, or is missing or has another version in
            ``runtime_dir``.
    """
    if runtime_dir is None:
        return fetch_tarball(package, cache)
    root = Path(runtime_dir) / package.name
    _check_installed_version(package, root)
    return root


def copy_package_files(package: NpmPackage, source: Path, files: Dict[str, str], destination: Path) -> None:
    """Copy ``files`` (``{path inside the package: path under destination}``) out of ``package`` at ``source``
    (see :func:`package_source`: an installed package folder or the package tarball).

    Raises:
        RuntimeDownloadError: a file is not in the package.
    """
    if source.is_dir():
        for inner, outer in files.items():
            path = source / inner
            if not path.is_file():
                raise RuntimeDownloadError(f"{path}: not found in the installed {package.name}; "
                                           f"reinstall it with `{package.install_hint}`")
            _write(destination / outer, path.read_bytes())
        return
    wanted = {f"package/{inner}": outer for inner, outer in files.items()}
    with tarfile.open(source, "r|gz") as archive:  # one streaming pass: gzip cannot seek backwards cheaply
        for member in archive:
            if member.name in wanted and member.isfile():
                _write(destination / wanted.pop(member.name), archive.extractfile(member).read())
                if not wanted:
                    break
    if wanted:
        missing = ", ".join(name.partition("/")[2] for name in wanted)
        raise RuntimeDownloadError(f"{source}: {missing} not in {package.name} {package.version}")


def _check_installed_version(package: NpmPackage, root: Path) -> None:
    try:
        version = json.loads((root / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        raise RuntimeDownloadError(f"{root}: {package.name} is not installed there; run "
                                   f"`{package.install_hint}` in the folder above node_modules") from None
    if version != package.version:
        raise RuntimeDownloadError(f"{root}: {package.name} {version} is installed; slidelite web needs "
                                   f"{package.version}: run `{package.install_hint}`")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

