"""A QR code drawn with half-block characters, dark on light whatever the terminal's colours.

segno builds the symbol (a small, pure-Python, well-kept QR library); we only draw its module matrix,
two module rows per terminal line, so a version 3-4 code (a pairing URL) fits in about 18 lines.
"""

from __future__ import annotations

import segno
from rich.text import Text

# Scanners read dark modules on a light ground; a dark terminal theme must not invert that.
STYLE = "#000000 on #ffffff"
BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def qr_matrix(data: str, border: int = 2) -> list[list[bool]]:
    """The QR symbol for ``data`` as rows of dark (True) / light modules, with a quiet zone.

    Error correction L keeps the symbol small; a phone camera a few centimetres from a screen does
    not need more."""
    code = segno.make_qr(data, error="l", boost_error=False)
    return [[bool(module) for module in row] for row in code.matrix_iter(scale=1, border=border)]


def qr_text(data: str, border: int = 2) -> Text:
    rows = qr_matrix(data, border)
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    lines = [
        "".join(BLOCKS[(t, b)] for t, b in zip(top, bottom, strict=True))
        for top, bottom in zip(rows[::2], rows[1::2], strict=True)
    ]
    # No rstrip: the last line may be all quiet zone (spaces on white), and a scanner needs it.
    return Text("\n".join(lines), style=STYLE, no_wrap=True, overflow="crop")
