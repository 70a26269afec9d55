"""``terramask serve``: the browser app for interactive segmentation of scenes."""

from __future__ import annotations

import errno
import socket

import click

from terramask.cli.options import model_options, runtime_option, text_model_options

#: Hosts that only this machine can reach; the app then accepts only these Host headers.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`InputError` when ``host:port`` cannot be bound (in use, unknown host),
    before the model is loaded, instead of a server log line after it."""
    from terramask.core.errors import InputError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r}: cannot resolve ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise InputError(f"--port {port}: {host}:{port} is already in use; choose another port") from None
            raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None


def _url(host: str, port: int) -> str:
    """The address to open in a browser for a server listening on ``host:port``."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


@click.command("serve")
@click.argument("scenes", nargs=-1, required=True, type=click.Path(dir_okay=True))
@click.option("--bands", help="1-based bands to show and segment in the first scene, e.g. 4,3,2 (default: first three, "
              "or band 1 as grey); the page changes them per scene.")
@model_options
@runtime_option
@text_model_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is reachable from this machine only; "
              "0.0.0.0 opens the app (and exports) to the network.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--out", "out_dir", default="terramask-exports", show_default=True, type=click.Path(file_okay=False),
              help="Folder that receives exports (one sub-folder per exported mask) and the scene's object layer "
              "(layers/<scene>/objects.gpkg, kept across restarts).")
@click.option("--max-upload-mb", default=500.0, show_default=True, type=click.FloatRange(min=0),
              help="Largest GeoTIFF/PNG/JPEG the page may upload (saved under OUT/uploads/); 0 turns uploads off.")
@click.option("--upload-quota-mb", default=5000.0, show_default=True, type=click.FloatRange(min=0),
              help="Most the upload folder OUT/uploads/ may hold in all (uploads past it get 413); 0: no total limit.")
@click.option("--open", "open_browser", is_flag=True, help="Open the app in the default web browser.")
def command(scenes, bands, model, checkpoint, device, runtime, detector, detector_checkpoint, box_threshold,
            text_threshold, threshold, host, port, out_dir, max_upload_mb, upload_quota_mb, open_browser):
    """Segment SCENES interactively in a web browser.

    SCENES are GeoTIFF/PNG/JPEG files and directories holding them; the page lists them
    in a picker (the first is shown first) and switches bands and model per scene.
    Click an object for an object point, right-click (or Shift+click) for a background
    point, drag for a box; choose among the candidate masks, refine with more points,
    export the chosen mask as mask.tif / mask.gpkg / mask.geojson, or accept it (Enter)
    into the scene's object layer with a class, downloadable as GeoPackage, GeoJSON,
    FlatGeobuf or a labels.tif class raster; select an object to re-open and refine it.
    The embedding is computed once per encoded window and reused by every click.
    With --detector (a detector, or sam3), the page's text box finds every instance of
    typed phrases in the shown window or the whole scene, as candidates classed by phrase.
    """
    from terramask.core.lazy import require

    require("fastapi", "web")
    uvicorn = require("uvicorn", "web")
    from terramask.web.limits import SHUTDOWN_GRACE_S
    from terramask.web.server import create_server

    check_port_free(host, port)
    loopback = host in LOOPBACK_HOSTS
    text_model = None
    if detector is not None or detector_checkpoint is not None:
        from terramask.models.concept.resolve import DEFAULT_DETECTOR, load_text_model

        text_model = load_text_model(detector or DEFAULT_DETECTOR, detector_checkpoint, device=device,
                                     box_threshold=box_threshold, text_threshold=text_threshold, threshold=threshold)
    elif box_threshold is not None or text_threshold is not None or threshold is not None:
        from terramask.core.errors import InputError

        raise InputError("--box-threshold/--text-threshold/--threshold tune the text model; give it with --detector")
    app = create_server(
        scenes, model=model, checkpoint=checkpoint, device=device, runtime=runtime, bands=bands, out_dir=out_dir,
        allowed_hosts=list(LOOPBACK_HOSTS) if loopback else None, max_upload_mb=max_upload_mb,
        upload_quota_mb=upload_quota_mb, text_model=text_model,
    )
    views = app.state.views
    listed = views.catalog.entries()
    first = views.default_view.state.terramask
    url = _url(host, port)
    more = f" and {len(listed) - 1} more scene(s)" if len(listed) > 1 else ""
    click.echo(f"terramask: serving {first.scene.path} ({first.scene.width}x{first.scene.height} px){more} "
               f"with model {first.model} at {url}  (Ctrl+C to stop)", err=True)
    click.echo(f"terramask: exports and object layers go to {views.out_dir}", err=True)
    click.echo(f"terramask: text box: {text_model.name}" if text_model is not None else
               "terramask: text box off (start with --detector grounding-dino-tiny, owlv2-base or sam3 to use it)",
               err=True)
    if max_upload_mb > 0:
        total = f", {upload_quota_mb:g} MB in all" if upload_quota_mb > 0 else ""
        click.echo(f"terramask: the page may upload scenes up to {max_upload_mb:g} MB{total} into "
                   f"{views.out_dir / 'uploads'}", err=True)
    if not loopback:
        click.echo(f"terramask: warning: listening on {host}: anyone who can reach this machine can use the app "
                   "and write exports", err=True)
    if open_browser:
        import threading
        import webbrowser

        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
