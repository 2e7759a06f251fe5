"""Image grids as one PIL image (validation grids, side-by-side pairs); :class:`~humantune.report.html.HtmlReport`
lays out captioned grids in HTML instead."""

from __future__ import annotations

from PIL import Image


def image_grid(rows: list[list[Image.Image]], gap: int = 0, background: tuple[int, int, int] = (0, 0, 0)
               ) -> Image.Image:
    """Paste ``rows`` of images into one RGB image, every cell the size of the first image (others are resized),
    ``gap`` pixels of ``background`` between cells."""
    if not rows or not rows[0]:
        raise ValueError("image_grid needs at least one image")
    w, h = rows[0][0].size
    columns = max(len(r) for r in rows)
    canvas = Image.new("RGB", (columns * w + (columns - 1) * gap, len(rows) * h + (len(rows) - 1) * gap), background)
    for y, row in enumerate(rows):
        for x, im in enumerate(row):
            im = im.convert("RGB")
            canvas.paste(im if im.size == (w, h) else im.resize((w, h)), (x * (w + gap), y * (h + gap)))
    return canvas
