"""``Report``: text, tables and figures, rendered as one self-contained HTML page or markdown.

The builder knows nothing about inference methods; :func:`comparison_report` lays a
:class:`~probgen.Comparison` out with it. Figures are rendered to PNG when added, so a report is
plain data (strings and bytes) that renders the same every time and holds no live figures. The
HTML page embeds its PNGs as ``data:`` URIs (RFC 2397) and its CSS inline: one file, no network,
no script. Writing is atomic: temporary files in the target directory, then ``os.replace``.
"""

from __future__ import annotations

import base64
import html
import io
import math
import numbers
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from probgen.compare import Comparison

__all__ = ["DPI", "Report", "comparison_report", "format_cell"]

#: Resolution of the PNGs: sharp on screen for the 3-inch panels of probgen's figures.
DPI = 110

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:72rem;
margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{border-bottom:2px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.92rem}
th,td{border:1px solid #ccc;padding:.25rem .6rem}
th{background:#f2f2f2;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}
code{background:#f4f4f4;padding:0 .2rem;border-radius:3px}
img{max-width:100%;height:auto}
figcaption,p.note{color:#555;font-size:.9rem}
"""


def format_cell(value: Any) -> str:
    """The printed form of a table cell.

    ``None`` and NaN print as ``-``, booleans as ``yes``/``no``, integers as they are, other
    reals with 4 significant digits; one-element tensors and NumPy scalars print as their
    element; anything else as ``str(value)``.
    """
    item = getattr(value, "item", None)
    if callable(item) and not isinstance(value, (str, bytes)):
        try:
            value = item()
        except (ValueError, RuntimeError, TypeError):  # more than one element: print as is
            pass
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return "-" if math.isnan(number) else f"{number:.4g}"
    return str(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# ----------------------------------------------------------------------------- markdown subset
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    """Escaped HTML of one line: ``**bold**`` and `` `code` `` (nothing inside code)."""
    parts = _CODE_SPAN.split(text)  # even indices: prose; odd: code span contents
    out = []
    for i, part in enumerate(parts):
        escaped = html.escape(part, quote=True)
        out.append(
            f"<code>{escaped}</code>" if i % 2 else _BOLD.sub(r"<strong>\1</strong>", escaped)
        )
    return "".join(out)


def _markdown_html(text: str) -> str:
    """HTML of a markdown subset: ATX headings, paragraphs, bold, code spans, flat lists."""
    out: list[str] = []
    paragraph: list[str] = []
    items: list[str] = []
    list_tag = ""

    def flush() -> None:
        nonlocal list_tag
        if paragraph:
            out.append("<p>" + " ".join(_inline(line) for line in paragraph) + "</p>")
            paragraph.clear()
        if items:
            body = "".join(f"<li>{_inline(item)}</li>" for item in items)
            out.append(f"<{list_tag}>{body}</{list_tag}>")
            items.clear()
            list_tag = ""

    for raw in text.splitlines():
        line = raw.strip()
        heading = _HEADING.match(line)
        bullet = _BULLET.match(raw)
        numbered = None if bullet else _NUMBERED.match(raw)
        if not line:
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif bullet or numbered:
            tag = "ul" if bullet else "ol"
            if paragraph or (items and tag != list_tag):
                flush()
            list_tag = tag
            items.append((bullet or numbered).group(1))  # type: ignore[union-attr]
        elif items and raw[:1].isspace():  # an indented line continues the list item
            items[-1] += " " + line
        else:
            if items:
                flush()
            paragraph.append(line)
    flush()
    return "\n".join(out)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|<>#])")


def _md_escape(text: str) -> str:
    """Text as literal markdown: specials backslash-escaped, line breaks folded into spaces."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _md_safe(markdown: str) -> str:
    """Markdown with raw HTML tags neutralised (``<`` and ``>`` backslash-escaped outside code
    spans, where markdown already shows them literally)."""
    parts = _CODE_SPAN.split(markdown.strip())
    return "".join(
        f"`{part}`" if i % 2 else part.replace("<", "\\<").replace(">", "\\>")
        for i, part in enumerate(parts)
    )


# ----------------------------------------------------------------------------- report
@dataclass(frozen=True)
class _Text:
    markdown: str


@dataclass(frozen=True)
class _Table:
    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[tuple[bool, ...], ...]
    note: str


@dataclass(frozen=True)
class _Image:
    title: str
    name: str
    png: bytes
    caption: str


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "figure"


def _check_str(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


class Report:
    """A document of text sections, tables and figures, in the order they were added.

    Renders to markdown (:meth:`to_markdown`) or one self-contained HTML page (:meth:`to_html`)
    and writes either atomically (:meth:`write`).

    Args:
        title: the document title (the page's ``<title>`` and top heading).
    """

    def __init__(self, title: str) -> None:
        self.title = _check_str(title, "title")
        self._items: list[_Text | _Table | _Image] = []

    # --------------------------------------------------------------------- building
    def add_text(self, markdown: str) -> None:
        """Adds prose in a markdown subset: ``#`` headings, paragraphs separated by blank lines,
        ``**bold**``, `` `code` `` and flat ``-``/``1.`` lists. HTML in it is shown, not run."""
        self._items.append(_Text(_check_str(markdown, "markdown")))

    def add_table(
        self,
        title: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        note: str = "",
    ) -> None:
        """Adds a table; cells are printed by :func:`format_cell` when added.

        Raises:
            ValueError: no columns, or a row whose length differs from the columns'.
        """
        _check_str(title, "title")
        _check_str(note, "note")
        if isinstance(columns, str) or not len(columns):
            raise ValueError(f"columns of table {title!r} must be a non-empty sequence of names")
        width = len(columns)
        for i, row in enumerate(rows):
            if isinstance(row, str) or len(row) != width:
                got = "a str" if isinstance(row, str) else f"{len(row)} cells"
                raise ValueError(
                    f"row {i} of table {title!r} has {got}; expected {width} (one per column)"
                )
        self._items.append(
            _Table(
                title,
                tuple(str(c) for c in columns),
                tuple(tuple(format_cell(v) for v in row) for row in rows),
                tuple(tuple(_is_number(v) for v in row) for row in rows),
                note,
            )
        )

    def add_figure(
        self, title: str, figure: Figure, caption: str = "", *, name: str | None = None
    ) -> None:
        """Renders ``figure`` to PNG (at :data:`DPI`) now and closes it.

        Args:
            title: heading above the figure.
            figure: a matplotlib figure.
            caption: text below it (markdown subset).
            name: file stem of the PNG in markdown output (default: from ``title``), made unique.

        Raises:
            TypeError: ``figure`` is not a matplotlib figure. Whatever ``savefig`` raises
                propagates, and the report is left unchanged.
        """
        from matplotlib.figure import Figure

        _check_str(title, "title")
        _check_str(caption, "caption")
        if not isinstance(figure, Figure):
            raise TypeError(
                f"figure must be a matplotlib.figure.Figure, got {type(figure).__name__}"
            )
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
        if "matplotlib.pyplot" in sys.modules:  # a pyplot-managed figure is kept alive there
            sys.modules["matplotlib.pyplot"].close(figure)
        stem = _slug(_check_str(name, "name") if name is not None else title)
        taken = {item.name for item in self._items if isinstance(item, _Image)}
        unique, k = stem, 1
        while unique in taken:
            k += 1
            unique = f"{stem}-{k}"
        self._items.append(_Image(title, unique, buffer.getvalue(), caption))

    def images(self) -> dict[str, bytes]:
        """The PNGs of the figures, by file stem, in order."""
        return {item.name: item.png for item in self._items if isinstance(item, _Image)}

    # --------------------------------------------------------------------- rendering
    def to_markdown(self, image_dir: str | None = None) -> str:
        """GitHub-flavoured markdown.

        Args:
            image_dir: figures link to ``image_dir/NAME.png`` (relative to the markdown file;
                see :meth:`images` for the bytes). None: figures are left out, with a note.
        """
        out = [f"# {_md_escape(self.title)}"]
        for item in self._items:
            if isinstance(item, _Text):
                out.append(_md_safe(item.markdown))
            elif isinstance(item, _Table):
                out.append(f"## {_md_escape(item.title)}")
                out.append(
                    "\n".join(
                        [
                            "| " + " | ".join(_md_escape(c) for c in item.columns) + " |",
                            "|" + "|".join("---" for _ in item.columns) + "|",
                            *(
                                "| " + " | ".join(_md_escape(c) for c in r) + " |"
                                for r in item.rows
                            ),
                        ]
                    )
                )
                if item.note:
                    out.append(_md_safe(item.note))
            else:
                out.append(f"## {_md_escape(item.title)}")
                if image_dir is None:
                    out.append("*(figure not included in markdown: see the HTML report)*")
                else:
                    link = quote(f"{image_dir.rstrip('/')}/{item.name}.png")
                    out.append(f"![{_md_escape(item.title)}]({link})")
                if item.caption:
                    out.append(_md_safe(item.caption))
        return "\n\n".join(out) + "\n"

    def to_html(self) -> str:
        """One self-contained, well-formed (XHTML-clean) HTML5 page: CSS inline, figures as
        ``data:image/png;base64`` URIs, no external reference and no script."""
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        for item in self._items:
            if isinstance(item, _Text):
                body.append(_markdown_html(item.markdown))
            elif isinstance(item, _Table):
                head = "".join(f"<th>{esc(c)}</th>" for c in item.columns)
                rows = "".join(
                    "<tr>"
                    + "".join(
                        f'<td class="num">{esc(c)}</td>' if num else f"<td>{esc(c)}</td>"
                        for c, num in zip(row, numeric, strict=True)
                    )
                    + "</tr>"
                    for row, numeric in zip(item.rows, item.numeric, strict=True)
                )
                body.append(
                    f"<h2>{esc(item.title)}</h2>\n<table><thead><tr>{head}</tr></thead>"
                    f"<tbody>{rows}</tbody></table>"
                )
                if item.note:
                    body.append(f'<p class="note">{_inline(" ".join(item.note.split()))}</p>')
            else:
                data = base64.b64encode(item.png).decode("ascii")
                caption = (
                    f"<figcaption>{_inline(item.caption)}</figcaption>" if item.caption else ""
                )
                body.append(
                    f"<h2>{esc(item.title)}</h2>\n<figure>"
                    f'<img src="data:image/png;base64,{data}" alt="{esc(item.title)}"/>'
                    f"{caption}</figure>"
                )
        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
            f"<title>{esc(self.title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body)
            + "\n</body>\n</html>\n"
        )

    # --------------------------------------------------------------------- writing
    def write(self, path: str | Path) -> Path:
        """Writes the report to ``path`` atomically and returns ``path``.

        ``.html``: the page of :meth:`to_html`. ``.md``: the markdown of :meth:`to_markdown`, its
        PNGs in the folder ``STEM_files`` beside it. Every file is first written to a temporary
        file in its target directory and then renamed over the target (``os.replace``), the
        markdown last; on any failure (including an interrupt) the temporary files, and the PNGs
        and folder this call created, are removed, so no half-written file is left.

        Raises:
            ValueError: the suffix is neither ``.html`` nor ``.md``.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".html", ".md"):
            raise ValueError(f"report path {str(path)!r} must end in .html or .md")
        files: list[tuple[Path, bytes]] = []
        folder = path.parent / f"{path.stem}_files"
        if suffix == ".html":
            files.append((path, self.to_html().encode("utf-8")))
        else:
            images = self.images()
            files += [(folder / f"{name}.png", png) for name, png in images.items()]
            text = self.to_markdown(f"{folder.name}" if images else None)
            files.append((path, text.encode("utf-8")))
        made_folder = len(files) > 1 and not folder.exists()
        staged: list[tuple[Path, Path]] = []
        placed: list[Path] = []
        try:
            if made_folder:
                folder.mkdir()
            for target, content in files:
                staged.append((_stage(target, content), target))
            for tmp, target in staged:
                existed = target.exists()
                os.replace(tmp, target)
                if not existed:
                    placed.append(target)
        except BaseException:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)
            for target in placed:
                target.unlink(missing_ok=True)
            if made_folder and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
            raise
        return path


def _stage(target: Path, content: bytes) -> Path:
    """``content`` in a new temporary file beside ``target`` (same file system: an atomic
    rename), flushed to disk; removed again if writing fails.

    Created by ``os.open(..., 0o666)`` rather than ``tempfile.mkstemp``, whose files are private
    (0600): this way the report gets the permissions the umask gives any new file.
    """
    while True:
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


# ----------------------------------------------------------------------------- comparisons
_FIGURE_TITLES = {
    "loss": ("Objective per iteration", "Each method's own objective, so the scales differ."),
    "density": ("Fitted densities", "Each fit's (posterior predictive) density over the data."),
    "khat": ("PSIS k-hat", "Above 0.7 a variational posterior is not to be trusted."),
    "posterior": ("Posterior draws", "Pairwise draws per method (over the reference's, if any)."),
}


def _table_cells(comparison: Any) -> tuple[list[str], list[list[str]]]:
    """Header and printed rows of the comparison table, as its own renderings print them."""
    cells = getattr(comparison, "_cells", None)
    if callable(cells):
        head, *body = cells()
        return list(head), [list(r) for r in body]
    columns = list(comparison.columns)
    return columns, [[format_cell(r.get(c)) for c in columns] for r in comparison.rows]


def _dict_rows(rows: Any) -> tuple[list[str], list[list[Any]]]:
    """Rows given as mappings -> (union of keys in first-seen order, values with gaps None).
    A mapping of rows keyed by method is read as rows with a leading ``method`` column."""
    if isinstance(rows, Mapping):
        rows = [{"method": key, **dict(value)} for key, value in rows.items()]
    rows = [dict(r) for r in rows]
    columns: list[str] = []
    for row in rows:
        columns += [str(k) for k in row if str(k) not in columns]
    return columns, [[row.get(c) for c in columns] for row in rows]


def comparison_report(
    comparison: Comparison, title: str = "Comparison of inference methods"
) -> Report:
    """A :class:`Report` of a :class:`~probgen.Comparison`.

    Sections: the data sizes, the table (rows and columns as :meth:`Comparison.to_markdown`
    prints them), the figures of :meth:`Comparison.figures`, then, when the comparison has
    them, ``accuracy`` (rows of mappings, as a table of their keys), ``extra_figures``
    (name -> matplotlib figure) and ``notes`` (markdown strings).
    """
    report = Report(title)
    x, xt = comparison.data, comparison.test_data
    shape = " x ".join(str(s) for s in x.shape[1:]) or "scalar"
    held = f"; {xt.shape[0]} held out" if xt is not None else "; none held out"
    report.add_text(f"**Data:** {x.shape[0]} training points ({shape} each){held}.")
    head, body = _table_cells(comparison)
    report.add_table(
        "Methods",
        head,
        body,
        note="Log-likelihoods are per point (posterior predictive for fits with draws); "
        "R-hat and ESS are NUTS's; k-hat is PSIS's for variational guides.",
    )
    figures = comparison.figures()
    for name, figure in figures.items():
        heading, caption = _FIGURE_TITLES.get(name, (name, ""))
        report.add_figure(heading, figure, caption, name=name)
    accuracy = getattr(comparison, "accuracy", None)
    if accuracy:
        columns, rows = _dict_rows(accuracy)
        report.add_table("Accuracy against the reference posterior", columns, rows)
    for name, figure in (getattr(comparison, "extra_figures", None) or {}).items():
        if name not in figures:  # figures() may already include them
            report.add_figure(str(name), figure, name=str(name))
    notes = getattr(comparison, "notes", None) or ()
    for note in [notes] if isinstance(notes, str) else notes:
        report.add_text(note)
    return report
