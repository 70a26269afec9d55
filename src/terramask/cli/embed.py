"""``terramask embed``: precompute image embeddings for every tile of a scene.

The embeddings go to the persistent embedding cache (``<cache>/embeddings``, see
:mod:`terramask.models.embedding_cache`), keyed by model, weights and the exact pixels the
model sees, so later ``terramask predict`` / ``auto`` runs and the web app on the same
scene, bands and model skip the encoder. Windows: the whole scene when it is small
enough to be encoded whole by ``predict`` (longer side <= 2048), and the tile grid that
``auto`` uses (``--tile-size``/``--overlap``) when the scene is larger than one tile.
"""

from __future__ import annotations

import sys
import time

import click

from terramask.cli.options import assets_option, model_options, runtime_option


@click.command("embed")
@click.argument("scene", type=click.Path(dir_okay=False))
@assets_option
@model_options
@runtime_option
@click.option("--bands", help="1-based bands to show the model, e.g. 4,3,2 (must match later runs).")
@click.option("--tile-size", default=1024, show_default=True, type=int, help="Tile size of the grid (as `terramask auto`).")
@click.option("--overlap", default=128, show_default=True, type=int, help="Tile overlap (as `terramask auto`).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(scene, assets, model, checkpoint, device, runtime, bands, tile_size, overlap, quiet) -> None:
    """Precompute and cache embeddings for all tiles of SCENE with --model."""
    from terramask.core.errors import InputError
    from terramask.core.geometry import plan_tiles
    from terramask.io.scene import open_scene
    from terramask.io.stac import scene_source
    from terramask.models.resolve import load_backend
    from terramask.pipelines.prompted.predict import FULL_SCENE_MAX

    if tile_size <= 0 or overlap < 0 or overlap >= tile_size:
        raise InputError(f"--tile-size must be positive and --overlap in [0, tile size), got {tile_size} and {overlap}")
    backend = load_backend(model, checkpoint=checkpoint, device=device, runtime=runtime, cache=True)
    if not hasattr(backend, "cache"):
        raise InputError(f"model {getattr(backend, 'name', model)!r} has no image encoder; nothing to embed")
    started = time.perf_counter()
    computed = reused = skipped = 0
    encoder_s = 0.0
    with open_scene(scene_source(scene, assets), bands=bands) as sc:
        windows = []
        if max(sc.width, sc.height) <= FULL_SCENE_MAX:
            windows.append(sc.window)
        if max(sc.width, sc.height) > tile_size:
            windows += [t.window for t in plan_tiles(sc.path, sc.width, sc.height, tile_size, overlap) if t.window not in windows]
        show = not quiet and sys.stderr.isatty()
        from tqdm import tqdm

        for window in tqdm(windows, desc="embedding", unit="tile", disable=not show, file=sys.stderr):
            image = sc.read(window)
            if not image.valid_mask.any():
                skipped += 1
                continue
            emb = backend.set_image(image.to_rgb8())
            if emb.extras.get("cache") == "hit":
                reused += 1
            else:
                computed += 1
                encoder_s += float(emb.extras.get("encoder_seconds", 0.0))
    cache = backend.cache
    click.echo(
        f"{len(windows)} window(s) of {sc.path} with {backend.name}: {computed} encoded ({encoder_s:.1f} s), "
        f"{reused} already cached, {skipped} empty (nodata); {time.perf_counter() - started:.1f} s total; "
        f"cache {cache.directory} ({cache.size_bytes() / 2**20:.0f} MB of {cache.cap_bytes / 2**20:.0f} MB)"
    )
