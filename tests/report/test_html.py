import base64
import io
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from humantune.report.html import HtmlReport  # noqa: E402


def _embedded_images(text: str) -> list[Image.Image]:
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    return [Image.open(io.BytesIO(base64.b64decode(u))) for u in uris]


def test_text_is_escaped_everywhere():
    report = HtmlReport("a <b> & c")
    report.heading("<script>alert(1)</script>", level=3)
    report.paragraph('x < y & "z"')
    report.table([{"name": "<i>", "value": 1}])
    report.code("if a < b: print('&')")
    report.image_grid([(Image.new("RGB", (4, 4)), "cap <tion>")])
    text = report.render()
    assert "<script>" not in text and "<i>" not in text and "<b>" not in text
    assert "<title>a &lt;b&gt; &amp; c</title>" in text
    assert "<h3>&lt;script&gt;alert(1)&lt;/script&gt;</h3>" in text
    assert "<p>x &lt; y &amp; &quot;z&quot;</p>" in text
    assert "<figcaption>cap &lt;tion&gt;</figcaption>" in text
    assert "<pre><code>if a &lt; b: print(&#x27;&amp;&#x27;)</code></pre>" in text


def test_image_grid_embeds_every_image_and_references_nothing_outside(tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (8, 12, 3), dtype=np.uint8)) for _ in range(5)]
    report = HtmlReport("grid")
    report.image_grid([(im, f"#{i}") for i, im in enumerate(images)], columns=3, thumb_size=96)
    text = report.save(tmp_path / "r.html").read_text(encoding="utf-8")

    embedded = _embedded_images(text)
    assert len(embedded) == 5
    # small images keep their pixels; the browser enlarges them with nearest neighbour
    assert all(np.array_equal(np.asarray(e.convert("RGB")), np.asarray(i)) for e, i in zip(embedded, images))
    assert text.count('width="96" height="64"') == 5 and "image-rendering: pixelated" in text
    assert "repeat(3, max-content)" in text
    assert 'src="http' not in text and "href=" not in text and "url(" not in text
    assert re.findall(r'src="(?!data:)', text) == []


def test_large_images_are_shrunk_to_thumb_size():
    report = HtmlReport("big")
    report.image_grid([(Image.new("RGB", (400, 200), (10, 20, 30)), "big")], thumb_size=100)
    (embedded,) = _embedded_images(report.render())
    assert embedded.size == (100, 50)


def test_table_formats_and_aligns():
    report = HtmlReport("t")
    report.table([{"a": 0.123456, "b": 3}, {"a": None, "c": "x"}])
    report.table([[1.5, "y"]], columns=None, float_format="{:.1f}")
    text = report.render()
    assert "<th>a</th><th>b</th><th>c</th>" in text
    assert '<td class="num">0.1235</td><td class="num">3</td><td></td>' in text
    assert '<td></td><td></td><td>x</td>' in text
    assert '<tbody><tr><td class="num">1.5</td><td>y</td></tr></tbody>' in text
    assert text.count("<thead>") == 1


def test_matplotlib_figure_png_and_svg():
    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1], [1, 0])
    report = HtmlReport("fig")
    report.figure(fig)
    report.figure(fig, format="svg")
    plt.close(fig)
    text = report.render()
    (png,) = _embedded_images(text)
    assert png.format == "PNG" and png.width > 100
    (svg,) = re.findall(r'src="data:image/svg\+xml;base64,([^"]+)"', text)
    assert b"<svg" in base64.b64decode(svg)
