"""Numpy-only types and pure helpers; imports no torch, rasterio or web framework."""

from terramask.core.errors import TerramaskError
from terramask.core.geometry import Tile, Window, plan_tiles
from terramask.core.image import GeoImage, parse_bands
from terramask.core.maskset import MaskSet
from terramask.core.prompts import Prompts
from terramask.core.stretch import Stretch, compute_stretch

__all__ = [
    "GeoImage",
    "MaskSet",
    "Prompts",
    "Stretch",
    "TerramaskError",
    "Tile",
    "Window",
    "compute_stretch",
    "parse_bands",
    "plan_tiles",
]
