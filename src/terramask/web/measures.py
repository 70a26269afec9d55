"""Ground areas of masks from pixel counts, for click responses (no polygons).

A click answers with every candidate's area; tracing each candidate's outline to measure
it cost ~84 % of a response, so the page gets ``pixel count x area of one pixel``
instead. Polygons (and perimeters) are made only for downloads, exports and accepted
objects.

- projected CRS: pixel area in CRS units, converted to m² (exact for any mask);
- geographic CRS: geodesic area of one pixel at the mask's centre (the pixel's ground
  area changes with latitude by far less than 0.1 % across a 1024 px window);
- no CRS or no known unit: ``None`` (the page shows pixels).
"""

from __future__ import annotations

import math

from affine import Affine

from terramask.core.frames import pixel_area


class PixelArea:
    """Square metres covered by one pixel of a grid (``transform`` in ``crs``)."""

    def __init__(self, crs: str | None, transform: Affine) -> None:
        self.transform = transform
        self.geod = None
        self.projected_m2: float | None = None
        if crs is None:
            return
        import pyproj

        try:
            pcrs = pyproj.CRS.from_user_input(crs)
        except pyproj.exceptions.CRSError:
            return
        if pcrs.is_geographic:
            self.geod = pcrs.get_geod()
        elif pcrs.is_projected:
            factor = next((a.unit_conversion_factor for a in pcrs.axis_info
                           if a.unit_conversion_factor and a.unit_name not in ("degree", "radian", "grad", "unknown")),
                          None)
            if factor:
                self.projected_m2 = pixel_area(transform) * float(factor) ** 2

    def at(self, col: float, row: float) -> float | None:
        """m² of the pixel whose upper-left corner is at grid position ``(col, row)``
        (``None`` when the grid has no ground units)."""
        if self.projected_m2 is not None:
            return self.projected_m2
        if self.geod is None:
            return None
        t = self.transform
        corners = [t @ (col, row), t @ (col + 1, row), t @ (col + 1, row + 1), t @ (col, row + 1)]
        lons = [c[0] for c in corners]
        lats = [c[1] for c in corners]
        area, _ = self.geod.polygon_area_perimeter(lons, lats)
        return abs(float(area)) if math.isfinite(area) else None

    def area_m2(self, pixel_count: int, col: float, row: float) -> float | None:
        """Ground area of ``pixel_count`` pixels around grid position ``(col, row)``."""
        one = self.at(col, row)
        return None if one is None else float(pixel_count) * one
