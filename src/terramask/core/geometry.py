"""Windows and tiles: rectangles of scene pixels, holding no pixels themselves.

Conventions (DESIGN.md): windows are ``col_off, row_off, width, height`` like
rasterio; pixel coordinates are ``(x=col, y=row)``; shapes are ``(rows, cols)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from terramask.core.errors import InputError


@dataclass(frozen=True)
class Window:
    """A rectangle of scene pixels in rasterio order."""

    col_off: int
    row_off: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 0 or self.height < 0:
            raise InputError(f"window size must be non-negative, got {self.width}x{self.height}")

    @classmethod
    def full(cls, width: int, height: int) -> "Window":
        """The window covering a whole ``width`` x ``height`` scene."""
        return cls(0, 0, width, height)

    @classmethod
    def from_bounds(cls, x0: int, y0: int, x1: int, y1: int) -> "Window":
        """Window from pixel bounds ``[x0, x1) x [y0, y1)``."""
        return cls(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        return (self.height, self.width)

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``, end-exclusive, in scene pixels."""
        return (self.col_off, self.row_off, self.col_off + self.width, self.row_off + self.height)

    @property
    def area(self) -> int:
        return self.width * self.height

    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing a scene-sized array."""
        return (
            slice(self.row_off, self.row_off + self.height),
            slice(self.col_off, self.col_off + self.width),
        )

    def intersection(self, other: "Window") -> "Window":
        """The overlap of two windows (possibly empty, width or height 0)."""
        x0 = max(self.col_off, other.col_off)
        y0 = max(self.row_off, other.row_off)
        x1 = min(self.bounds[2], other.bounds[2])
        y1 = min(self.bounds[3], other.bounds[3])
        return Window.from_bounds(x0, y0, max(x0, x1), max(y0, y1))

    def contains(self, x: float, y: float) -> bool:
        """Whether the pixel coordinate ``(x, y)`` (scene frame) lies inside."""
        x0, y0, x1, y1 = self.bounds
        return x0 <= x < x1 and y0 <= y < y1

    def to_dict(self) -> dict[str, int]:
        return {"col_off": self.col_off, "row_off": self.row_off, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Tile:
    """A window planned for processing. Cheap to pickle and send to a worker.

    ``index`` is ``(row, col)`` in the tile grid; ``overlap`` is the number of pixels
    shared with each neighbour; ``source`` is the scene path (or any identifier).
    """

    source: str
    window: Window
    index: tuple[int, int]
    overlap: int

    @property
    def id(self) -> str:
        return f"r{self.index[0]}_c{self.index[1]}"


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Window starts covering ``[0, length)`` with windows of ``size`` every ``stride``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return sorted(set(starts))


def plan_tiles(source: str, width: int, height: int, tile_size: int, overlap: int) -> list[Tile]:
    """Tiles of ``tile_size`` pixels sharing ``overlap`` pixels, covering the scene.

    The last row/column of tiles is shifted inwards so every tile has full size when
    the scene is larger than one tile; a smaller scene is one tile of the scene size.
    """
    if tile_size <= 0:
        raise InputError(f"tile size must be positive, got {tile_size}")
    if overlap < 0 or overlap >= tile_size:
        raise InputError(f"overlap must be in [0, tile size), got {overlap} for tile size {tile_size}")
    stride = tile_size - overlap
    tiles = []
    for r, row_off in enumerate(_starts(height, tile_size, stride)):
        for c, col_off in enumerate(_starts(width, tile_size, stride)):
            window = Window(col_off, row_off, min(tile_size, width), min(tile_size, height))
            tiles.append(Tile(source, window, (r, c), overlap))
    return tiles
