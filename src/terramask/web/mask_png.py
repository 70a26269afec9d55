"""A mask as the smallest PNG a browser draws as it is: 1 bit per pixel, one colour,
the rest transparent.

:func:`terramask.io.overlay.png_bytes` (OpenCV) writes 8-bit pictures without a palette
or a transparency chunk; a click's candidates need neither: at 1 bit per pixel zlib has
an eighth of the bytes to compress (a 900 x 900 candidate of a random-weight SAM,
speckled over the whole scene: ~0.6 ms and 17 kB at level 1, against 20-80 ms and 47 kB
as 8-bit grey), and with a two-colour palette whose first entry is transparent
(``PLTE`` + ``tRNS``) the page decodes it off its main thread (``createImageBitmap``)
and draws it directly: no tinting, outlining or pixel loop in JavaScript.
:func:`boundary` gives the outline to send the same way.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from terramask.core.errors import InputError

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WHITE = (255, 255, 255)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def boundary(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``mask`` with a 4-neighbour off the mask or off the
    array (the outline the page draws around a candidate)."""
    mask = np.asarray(mask, dtype=bool)
    framed = np.pad(mask, 1)
    inner = framed[:-2, 1:-1] & framed[2:, 1:-1]
    inner &= framed[1:-1, :-2]
    inner &= framed[1:-1, 2:]
    return mask & ~inner


def bilevel_png(mask: np.ndarray, colour: tuple[int, int, int] = WHITE, compression: int = 1) -> bytes:
    """``(H, W)`` bool -> PNG bytes, bit depth 1 with a palette: ``True`` pixels
    ``colour`` (RGB 0-255) and opaque, ``False`` pixels fully transparent;
    ``compression`` is zlib's level.

    Raises :class:`InputError` for an array that is not 2-D or has no pixels, or a colour
    that is not three values 0-255."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or mask.size == 0:
        raise InputError(f"a mask PNG needs a non-empty (H, W) array, got shape {mask.shape}")
    if len(colour) != 3 or not all(0 <= int(v) <= 255 for v in colour):
        raise InputError(f"a mask PNG colour is three values 0-255 (RGB), got {colour!r}")
    rows, cols = mask.shape
    packed = np.packbits(mask, axis=1)  # most significant bit first: PNG's order
    scanlines = np.zeros((rows, packed.shape[1] + 1), dtype=np.uint8)  # filter byte 0 (none) per row
    scanlines[:, 1:] = packed
    header = struct.pack(">IIBBBBB", cols, rows, 1, 3, 0, 0, 0)  # 1 bit, palette, deflate, no filter/interlace
    return b"".join([
        _SIGNATURE,
        _chunk(b"IHDR", header),
        _chunk(b"PLTE", bytes([0, 0, 0, *(int(v) for v in colour)])),
        _chunk(b"tRNS", bytes([0, 255])),  # index 0 transparent, index 1 opaque
        _chunk(b"IDAT", zlib.compress(scanlines.tobytes(), compression)),
        _chunk(b"IEND", b""),
    ])
