"""Self-contained HTML reports: one file, images embedded as data URIs, no scripts, CDNs or external files."""

from __future__ import annotations

import base64
import html
import io
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from humantune.io import write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1400px;
       padding: 0 1rem; color: #1d1d1f; background: #fff; line-height: 1.45; }
h1, h2, h3, h4, h5, h6 { font-weight: 600; margin: 1.6em 0 .5em; }
h1 { font-size: 1.7rem; border-bottom: 1px solid #ddd; padding-bottom: .3em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: .3em .8em; text-align: left; vertical-align: top; }
th { background: #f5f5f7; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f5f5f7; padding: .8em 1em; overflow-x: auto; font-size: .85rem; border-radius: 4px; }
.grid { display: grid; gap: 10px; justify-content: start; align-items: start; margin: .8em 0; }
figure { margin: 0; }
.grid img { display: block; max-width: 100%; height: auto; image-rendering: pixelated; background: #eee; }
figcaption { font-size: .8rem; color: #444; margin-top: .25em; overflow-wrap: anywhere; }
.figure img { max-width: 100%; height: auto; }
"""


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...`` for ``image`` (modes PNG cannot store are converted to RGB first)."""
    if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _cell(value: Any, float_format: str) -> tuple[str, bool]:
    """(escaped text, is_numeric) for one table cell; floats use ``float_format``, None is empty."""
    if value is None:
        return "", False
    if isinstance(value, bool):
        return html.escape(str(value)), False
    if isinstance(value, numbers.Integral):
        return str(int(value)), True
    if isinstance(value, numbers.Real):
        return html.escape(float_format.format(float(value))), True
    return html.escape(str(value)), False


class HtmlReport:
    """A report built block by block (headings, text, tables, image grids, figures, code), rendered to one
    self-contained HTML page. All text is HTML-escaped."""

    def __init__(self, title: str):
        self.title = title
        self._blocks: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str, level: int = 2) -> None:
        if not 1 <= level <= 6:
            raise ValueError(f"heading level must be 1..6, got {level}")
        self._blocks.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str) -> None:
        self._blocks.append(f"<p>{html.escape(text)}</p>")

    def table(
        self, rows: list[dict] | list[list], columns: list[str] | None = None, float_format: str = "{:.4g}"
    ) -> None:
        """A table of dict rows (columns default to the keys in first-seen order; missing keys are empty) or of
        list rows (``columns`` is the optional header). Real numbers are right-aligned, floats use ``float_format``."""
        if rows and isinstance(rows[0], dict):
            if columns is None:
                columns = list(dict.fromkeys(key for row in rows for key in row))
            values = [[row.get(c) for c in columns] for row in rows]
        else:
            values = [list(row) for row in rows]
        parts = ["<table>"]
        if columns is not None:
            parts.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr></thead>")
        parts.append("<tbody>")
        for row in values:
            cells = [_cell(v, float_format) for v in row]
            parts.append(
                "<tr>" + "".join(f'<td class="num">{t}</td>' if num else f"<td>{t}</td>" for t, num in cells) + "</tr>"
            )
        parts.append("</tbody></table>")
        self._blocks.append("".join(parts))

    def image_grid(
        self, items: list[tuple[Image.Image, str]], columns: int = 8, thumb_size: int | None = None
    ) -> None:
        """Images with a caption under each, ``columns`` per row.

        ``thumb_size`` is the displayed long side in CSS pixels: smaller images are shown enlarged with
        nearest-neighbour sampling (``image-rendering: pixelated``, the file keeps the original pixels), larger
        ones are downscaled (Lanczos) before embedding. None shows every image at its own size.
        """
        if columns < 1:
            raise ValueError(f"columns must be positive, got {columns}")
        parts = [f'<div class="grid" style="grid-template-columns: repeat({columns}, max-content)">']
        for image, caption in items:
            width, height = image.size
            if thumb_size is not None:
                scale = thumb_size / max(width, height)
                width, height = max(1, round(width * scale)), max(1, round(height * scale))
                if scale < 1:
                    image = image.resize((width, height), Image.Resampling.LANCZOS)
            caption = html.escape(caption)
            parts.append(
                f'<figure><img src="{png_data_uri(image)}" width="{width}" height="{height}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
        parts.append("</div>")
        self._blocks.append("".join(parts))

    def figure(self, fig: Figure, format: str = "png", dpi: int = 100) -> None:
        """A matplotlib figure embedded as a PNG (at ``dpi``) or SVG data URI."""
        mime = {"png": "image/png", "svg": "image/svg+xml"}
        if format not in mime:
            raise ValueError(f"figure format must be 'png' or 'svg', got {format!r}")
        buf = io.BytesIO()
        fig.savefig(buf, format=format, dpi=dpi, bbox_inches="tight")
        uri = f"data:{mime[format]};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        self._blocks.append(f'<div class="figure"><img src="{uri}" alt="figure"></div>')

    def code(self, text: str) -> None:
        self._blocks.append(f"<pre><code>{html.escape(text)}</code></pre>")

    def render(self) -> str:
        body = "\n".join(self._blocks)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n"
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`render` to ``path`` atomically; returns the path."""
        write_text_atomic(path, self.render())
        return Path(path)
