"""``slidelite web``: write a static site that classifies with MODEL in a phone's browser; optionally serve it.

- ``slidelite web -o site/`` (default model), ``--model NAME|FILE``; a shipped name uses its ``--format``
  (``onnx``: onnxruntime-web, ``tflite``: MediaPipe Tasks Web).
- The runtime comes from pinned npm packages, downloaded once into the cache (``--cache-dir``) or copied from
  an installed ``node_modules`` (``--runtime-dir``); nothing is fetched from a CDN when the page runs.
- ``--serve`` serves the site on the local network (``--https``: with a self-signed certificate, which the
  camera needs on a phone) and prints the URL and a QR code (``pip install "slidelite[web]"``).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from ..web.site import SiteBuild, build_site
from ._common import Command, error_boundary, human_size, model_option

DEFAULT_PORTS = {False: 8000, True: 8443}


@click.command("web", cls=Command)
@model_option
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder to write the site into (new, empty, or an earlier slidelite web site).")
@click.option("--format", "model_format", type=click.Choice(["onnx", "tflite"]), default="onnx", show_default=True,
              help="Format of a shipped model: onnx runs on onnxruntime-web, tflite on MediaPipe Tasks Web.")
@click.option("--webgpu", is_flag=True, help="Ship onnxruntime-web's WebGPU build (used where the browser has "
                                              "WebGPU; larger download).")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes the page shows.")
@click.option("--runtime-dir", type=click.Path(file_okay=False, exists=True), default=None, metavar="NODE_MODULES",
              help="Copy the runtime from this installed node_modules instead of downloading it (offline builds).")
@click.option("--cache-dir", default=None, metavar="DIR",
              help="Where downloaded runtime packages are kept (default: $SLIDELITE_WEB_CACHE or "
                   "~/.cache/slidelite/web).")
@click.option("--serve", is_flag=True, help="Serve the site on the local network after writing it.")
@click.option("--https", "use_https", is_flag=True, help="Serve HTTPS with a self-signed certificate (implies --serve).")
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to serve on (--serve).")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=None,
              help="Port to serve on (default 8000, 8443 with --https; 0: any free port).")
@error_boundary
def command(model: Optional[str], out: str, model_format: str, webgpu: bool, top_k: int, runtime_dir: Optional[str],
            cache_dir: Optional[str], serve: bool, use_https: bool, host: str, port: Optional[int]) -> int:
    """Write a static site that classifies images with MODEL in a browser (phones included), offline once loaded."""
    build = build_site(model, out, model_format, webgpu, top_k, runtime_dir, cache_dir)
    click.echo(_summary(build))
    if serve or use_https:
        _serve(build.out, host, DEFAULT_PORTS[use_https] if port is None else port, use_https, cache_dir)
    return 0


def _summary(build: SiteBuild) -> str:
    runtime = build.runtime
    return (f"wrote {build.out}/ ({len(build.files)} files, {human_size(build.size_bytes)}): {build.model.path.name} "
            f"on {runtime.package.name} {runtime.package.version}; open index.html over http(s), "
            f"e.g. slidelite web --serve -o {build.out}")


def _serve(folder: Path, host: str, port: int, use_https: bool, cache: Optional[str]) -> None:
    from ..web.npm import cache_dir
    from ..web.serve import lan_address, make_server, qr_text

    server = make_server(folder, host, port, use_https, cache_dir(cache))
    shown = lan_address() if host in ("0.0.0.0", "") else host
    url = f"{'https' if use_https else 'http'}://{shown}:{server.server_address[1]}/"
    click.echo(f"serving {folder}/ at {url} (Ctrl-C stops)")
    qr = qr_text(url)
    click.echo(qr if qr is not None else 'QR code: pip install "slidelite[web]"')
    if use_https:
        click.echo("the certificate is self-signed: accept the browser's warning once on the phone")
    else:
        click.echo("phones allow the camera on https only: add --https (photos work over http)")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
