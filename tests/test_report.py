"""``probgen.report``: one self-contained HTML page (parsed, not string-matched), markdown, atomic
writes, escaping, and the layout of a ``Comparison``.

HTML is checked with the standard library's own parsers (``html.parser`` for tag balance and
cell text, ``xml.etree`` for well-formedness); PNGs by their signature (PNG spec, section 5.2).
"""

from __future__ import annotations

import base64
import copy
import math
import os
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from matplotlib.figure import Figure

import probgen
from probgen.report import Report, comparison_report, format_cell

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "br", "hr", "link", "input", "source", "col", "area", "base", "wbr"}
NASTY = "<script>alert(\"x&y\")</script> 'q' | a_b *c* `d`"


class Page(HTMLParser):
    """Tag balance, tables (as lists of rows of cell text), images and text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str | None]] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def _figure(color: str = "C0") -> Figure:
    fig = Figure(figsize=(2, 1.5))
    fig.subplots().plot([0, 1, 2], [0, 1, 0], color=color)
    return fig


class BrokenFigure(Figure):
    def savefig(self, *args, **kwargs):
        raise RuntimeError("savefig failed")


@pytest.fixture(scope="module")
def report() -> Report:
    """Built once: no test adds to it (rendering its figures is the costly part)."""
    r = Report("Report & <title>")
    r.add_text("## Section\n\nSome **bold** text and `code <x>`.\n\n- one\n- two\n\n1. first")
    r.add_table(
        "Numbers",
        ["name", "value", "flag"],
        [["a", 1.234567, True], ["b", None, False], ["c", 42, math.nan]],
        note="A **note**.",
    )
    r.add_figure("First figure", _figure(), "A caption.")
    r.add_table("Text", ["x"], [[NASTY]])
    r.add_figure("Second figure", _figure("C1"))
    return r


# ----------------------------------------------------------------------------- HTML
def test_html_is_well_formed_and_self_contained(report):
    page_text = report.to_html()
    page = Page(page_text)
    assert page.errors == [] and page.stack == []
    ET.fromstring(page_text)  # XHTML-clean: an XML parser accepts it too (raises if not)
    assert page_text.startswith("<!DOCTYPE html>")
    assert {"style", "table", "img", "h1", "h2"} <= set(page.tags)
    assert not {"script", "link", "iframe", "object"} & set(page.tags)
    for reference in ("http://", "https://", 'src="/', "href=", "url("):
        assert reference not in page_text, reference


def test_images_are_embedded_pngs(report):
    page = Page(report.to_html())
    assert len(page.images) == 2
    prefix = "data:image/png;base64,"
    pngs = list(report.images().values())
    for image, png in zip(page.images, pngs, strict=True):
        assert image["src"].startswith(prefix)
        data = base64.b64decode(image["src"][len(prefix) :], validate=True)
        assert data.startswith(PNG_MAGIC) and data == png
    assert [i["alt"] for i in page.images] == ["First figure", "Second figure"]


def test_html_tables_hold_every_cell(report):
    tables = Page(report.to_html()).tables
    assert tables == [
        [["name", "value", "flag"], ["a", "1.235", "yes"], ["b", "-", "no"], ["c", "42", "-"]],
        [["x"], [NASTY]],
    ]


def test_special_characters_are_escaped():
    r = Report(NASTY)
    r.add_table(NASTY, [NASTY], [[NASTY]], note=NASTY)
    r.add_text(NASTY)
    r.add_figure(NASTY, _figure(), NASTY)
    page_text = r.to_html()
    page = Page(page_text)
    assert "<script" not in page_text
    assert "script" not in page.tags and page.errors == []
    # The text a browser shows is the original string, wherever it was put.
    shown = "".join(page.text)
    # <title>, <h1>, table heading, header cell, body cell, note, text, figure heading, caption.
    assert shown.count("<script>alert(\"x&y\")</script> 'q' | a_b *c* ") == 9
    assert page.tables == [[[NASTY], [NASTY]]]
    assert page.images[0]["alt"] == NASTY
    md = r.to_markdown()
    assert "<script>" not in md
    row = next(line for line in md.splitlines() if line.startswith("| ") and "alert" in line)
    cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
    assert [re.sub(r"\\(.)", r"\1", c) for c in cells] == [NASTY]  # one cell, unescaped back


def test_markdown_subset_renders_as_html():
    r = Report("t")
    r.add_text(
        "# Top\n\n## Sub ##\nA paragraph\ncontinued with **bold** and `a **not bold** <b>`.\n\n"
        "- one\n- two\n  continued\n\n1. first\n2) second\n\nAfter."
    )
    body = r.to_html().split("<body>", 1)[1]
    assert "<h1>Top</h1>" in body and "<h2>Sub</h2>" in body
    assert (
        "<p>A paragraph continued with <strong>bold</strong> and "
        "<code>a **not bold** &lt;b&gt;</code>.</p>"
    ) in body
    assert "<ul><li>one</li><li>two continued</li></ul>" in body
    assert "<ol><li>first</li><li>second</li></ol>" in body
    assert "<p>After.</p>" in body


@pytest.mark.parametrize(
    ("value", "printed"),
    [
        (None, "-"),
        (math.nan, "-"),
        (True, "yes"),
        (np.bool_(False), "no"),
        (7, "7"),
        (np.int64(-3), "-3"),
        (0.123456789, "0.1235"),
        (np.float32(2.5), "2.5"),
        (torch.tensor(1234567.0), "1.235e+06"),
        ("text", "text"),
    ],
)
def test_format_cell(value, printed):
    assert format_cell(value) == printed


# ----------------------------------------------------------------------------- markdown
def test_markdown_without_images_notes_their_absence(report):
    md = report.to_markdown()
    assert md.startswith("# Report & \\<title\\>\n")
    assert "![" not in md
    assert md.count("figure not included in markdown") == 2
    assert "| a | 1.235 | yes |" in md and "| b | - | no |" in md
    assert "A **note**." in md and "Some **bold** text and `code <x>`." in md


def test_markdown_links_images(report):
    md = report.to_markdown("figs")
    links = re.findall(r"!\[([^\]]*)\]\(([^)]*)\)", md)
    assert links == [
        ("First figure", "figs/first-figure.png"),
        ("Second figure", "figs/second-figure.png"),
    ]
    assert list(report.images()) == ["first-figure", "second-figure"]


def test_figure_names_are_unique_and_can_be_given():
    r = Report("t")
    r.add_figure("Same", _figure())
    r.add_figure("Same", _figure())
    r.add_figure("Other title", _figure(), name="loss")
    assert list(r.images()) == ["same", "same-2", "loss"]


def test_pyplot_figures_are_closed():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    Report("t").add_figure("f", fig)
    assert not plt.fignum_exists(fig.number)


# ----------------------------------------------------------------------------- writing
def test_write_html(report, tmp_path):
    path = report.write(tmp_path / "r.html")
    assert path == tmp_path / "r.html"
    assert path.read_text(encoding="utf-8") == report.to_html()
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_write_markdown_with_images(report, tmp_path):
    path = report.write(tmp_path / "r.md")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.md", "r_files"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", path.read_text(encoding="utf-8"))
    assert len(links) == 2
    for link, png in zip(links, report.images().values(), strict=True):
        assert (tmp_path / link).read_bytes() == png
    assert len(list((tmp_path / "r_files").iterdir())) == 2


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_written_files_get_ordinary_permissions(report, tmp_path):
    """Not the private 0600 of a temporary file: what the umask gives any new file."""
    report.write(tmp_path / "r.html")
    report.write(tmp_path / "r.md")
    expected = 0o666 & ~_umask()
    for path in [tmp_path / "r.html", tmp_path / "r.md", *(tmp_path / "r_files").iterdir()]:
        assert path.stat().st_mode & 0o777 == expected, path.name


def test_write_markdown_without_figures_makes_no_folder(tmp_path):
    r = Report("t")
    r.add_text("only text")
    r.write(tmp_path / "r.md")
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]


def _failing_replace(monkeypatch, error: type[BaseException], after: int) -> None:
    """``os.replace`` that works ``after`` times, then raises ``error``."""
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) > after:
            raise error("replace failed")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("error", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize(("name", "after"), [("r.html", 0), ("r.md", 0), ("r.md", 2)])
def test_failed_write_leaves_nothing(report, tmp_path, monkeypatch, error, name, after):
    """``r.md`` with ``after=2``: both PNGs are in place when the markdown's rename fails."""
    _failing_replace(monkeypatch, error, after)
    with pytest.raises(error, match="replace failed"):
        report.write(tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file(report, tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("previous")
    _failing_replace(monkeypatch, RuntimeError, 0)
    with pytest.raises(RuntimeError):
        report.write(path)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_failing_figure_leaves_the_report_unchanged(tmp_path):
    r = Report("t")
    r.add_table("T", ["a"], [[1]])
    with pytest.raises(RuntimeError, match="savefig failed"):
        r.add_figure("broken", BrokenFigure())
    assert r.images() == {}
    assert "<img" not in r.to_html()
    r.write(tmp_path / "r.md")
    assert [p.name for p in tmp_path.iterdir()] == ["r.md"]


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.add_table("T", [], []), ValueError, "columns of table 'T' must be"),
        (lambda r: r.add_table("T", "ab", []), ValueError, "columns of table 'T'"),
        (
            lambda r: r.add_table("T", ["a", "b"], [[1, 2], [3]]),
            ValueError,
            "row 1 of table 'T' has 1 cells; expected 2",
        ),
        (lambda r: r.add_table("T", ["a"], ["x"]), ValueError, "row 0 of table 'T' has a str"),
        (lambda r: r.add_table(3, ["a"], []), TypeError, "title must be a str, got int"),
        (lambda r: r.add_text(None), TypeError, "markdown must be a str, got NoneType"),
        (
            lambda r: r.add_figure("f", "not a figure"),
            TypeError,
            "figure must be a matplotlib.figure.Figure, got str",
        ),
        (lambda r: r.write("report.txt"), ValueError, "must end in .html or .md"),
    ],
)
def test_bad_input_is_refused(call, error, message):
    r = Report("t")
    with pytest.raises(error, match=re.escape(message)):
        call(r)
    assert r.images() == {} and Page(r.to_html()).tables == []


def test_title_must_be_a_string():
    with pytest.raises(TypeError, match="title must be a str, got bytes"):
        Report(b"t")


# ----------------------------------------------------------------------------- comparisons
def _normal_model(x):
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=x)


@pytest.fixture(scope="module")
def comparison() -> probgen.Comparison:
    """A real comparison, kept cheap: MAP for 20 steps on 1-D data (no draws, no k-hat)."""
    x = torch.randn(40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1.0
    return probgen.compare(_normal_model, x[:30], ["map"], x[30:], options={"map": {"steps": 20}})


def _markdown_cells(table: str) -> list[list[str]]:
    """Cells of a markdown table (a ``\\|`` inside a cell is a literal pipe)."""
    lines = table.splitlines()
    return [
        [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        for line in [lines[0], *lines[2:]]
    ]


def test_comparison_report_renders_table_and_figures(comparison):
    report = comparison_report(comparison, title="Normal model")
    page = Page(report.to_html())
    assert page.errors == [] and page.stack == []
    # The main table is the comparison's own markdown table, cell for cell.
    assert page.tables[0] == _markdown_cells(comparison.to_markdown())
    assert list(report.images()) == list(comparison.figures())
    assert "30 training points" in "".join(page.text) and "10 held out" in "".join(page.text)


def test_comparison_report_renders_optional_sections(comparison):
    accuracy = [
        {"method": "map", "parameter": "loc", "mean_error": 0.25},
        {"method": "map", "parameter": "scale", "sd_error": None, "note": "<i>"},
    ]
    # Set on a copy, directly: works whether or not Comparison declares these as fields.
    extended = copy.copy(comparison)
    object.__setattr__(extended, "accuracy", accuracy)
    object.__setattr__(extended, "extra_figures", {"extra": _figure()})
    object.__setattr__(extended, "notes", ("A **first** note.", "Second note."))
    report = comparison_report(extended)
    page_text = report.to_html()
    page = Page(page_text)
    assert page.tables[1] == [
        ["method", "parameter", "mean_error", "sd_error", "note"],
        ["map", "loc", "0.25", "-", "-"],
        ["map", "scale", "-", "-", "<i>"],
    ]
    assert list(report.images()).count("extra") == 1
    assert "<p>A <strong>first</strong> note.</p>" in page_text
    assert "<p>Second note.</p>" in page_text
