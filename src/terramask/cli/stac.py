"""``terramask stac search``: find STAC items in a catalogue API and write them as files
that ``auto``, ``predict`` and ``batch`` take as scenes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from terramask.core.errors import InputError, OutputError


@click.group("stac")
def command() -> None:
    """STAC catalogues: find items to segment."""


def _bbox(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or values[0] >= values[2] or values[1] >= values[3]:
        raise InputError(f"--bbox must be WEST,SOUTH,EAST,NORTH in degrees (west < east, south < north), got {text!r}")
    return values


@command.command("search")
@click.argument("url")
@click.option("--collections", help="Comma-separated collection ids, e.g. sentinel-2-l2a.")
@click.option("--bbox", help="WEST,SOUTH,EAST,NORTH in degrees (EPSG:4326).")
@click.option("--datetime", "when", help="A date, a date-time or an interval: 2024-05-01/2024-05-31.")
@click.option("--query", "queries", multiple=True, metavar="PROPERTY<OP>VALUE",
              help="Property filter, e.g. eo:cloud_cover<10 (STAC API query extension). Repeatable.")
@click.option("--max-items", type=click.IntRange(1), default=20, show_default=True, help="Stop after this many items.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Write ITEM_ID.json files here "
              "(for `terramask batch OUT/*.json`); without it the items are printed as JSON lines.")
def search(url: str, collections: str | None, bbox: str | None, when: str | None, queries: tuple[str, ...],
           max_items: int, out_dir: str | None) -> None:
    """Search the STAC API at URL (e.g. https://earth-search.aws.element84.com/v1)."""
    from terramask.core.lazy import require
    from terramask.io.atomic import ensure_output_dir, write_text
    from terramask.io.remote import display_name

    client_mod = require("pystac_client", "stac", "pystac-client")
    try:
        client = client_mod.Client.open(url)
        found = client.search(collections=collections.split(",") if collections else None, bbox=_bbox(bbox),
                              datetime=when, query=list(queries) or None, max_items=max_items, method="GET")
        items = list(found.items())
    except InputError:
        raise
    except Exception as exc:  # pystac-client's APIError, urllib/requests errors, bad JSON
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{display_name(url)}: STAC search failed: {reason[:300]}") from exc
    if out_dir is None:
        for item in items:
            if item.get_self_href():
                item.make_asset_hrefs_absolute()
            click.echo(json.dumps(item.to_dict(), separators=(",", ":")))
        return
    out = ensure_output_dir(out_dir)
    for item in items:
        if item.get_self_href():
            item.make_asset_hrefs_absolute()  # the file is read from another place than the API
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in item.id) + ".json"
        try:
            write_text(Path(out) / name, json.dumps(item.to_dict(transform_hrefs=False), indent=1))
        except OSError as exc:
            raise OutputError(f"cannot write {Path(out) / name}: {exc}") from exc
    click.echo(f"{len(items)} item(s) from {display_name(url)} in {out}")
