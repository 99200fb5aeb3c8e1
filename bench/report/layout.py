"""Fitting a table to a width: which columns stay, how wide each is, and the two renderings.

rich shrinks a table that is too wide by cutting cells with an ellipsis or folding words
("GFLOP…", "causal=fals" / "e"). A report must never do that to a number or a unit, so the
widths are decided here, before rich sees the table:

1. every column starts at its natural width (its longest cell or header line);
2. columns that may wrap (parameters, flags) narrow, never below their longest word, since
   rich wraps between words and a word fits whole;
3. if still too wide, optional columns are left out, least useful first (each column has a
   priority), and the caller says which ones in a caption;
4. if even the narrowest table left is too wide (a narrow terminal), it is not handed to rich
   (which would cut cells): `stacked_lines` prints each row as "Column: value" lines wrapped at
   the width instead, every column kept.

With no width (a pipe or a file) nothing wraps and nothing is left out: every row is one line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.table import Table
from rich.text import Text

# rich's default box with padding (0, 1): one edge, then per column 1 + width + 1 + 1.
EDGE_CHARS = 1
PER_COLUMN_CHARS = 3
KEEP = 100  # priority of columns never left out


@dataclass
class Column:
    """One column: its header, cells, and how it may give way when space is short.

    wrap: cells may wrap between words (never inside one); `min_word` caps the width such a
    column insists on (a long error message may fold a word; parameters never do, so their
    cap is None). priority: lower is left out first; KEEP is never left out.
    """

    name: str
    cells: list[str]
    justify: str = "right"
    wrap: bool = False
    priority: int = KEEP
    min_word: int | None = None
    styles: list[str] | None = None
    width: int = field(init=False, default=0)

    def natural(self) -> int:
        lines = [line for text in (self.name, *self.cells) for line in text.split("\n")]
        return max((len(line) for line in lines), default=0)

    def narrowest(self) -> int:
        """The least width this column accepts: its longest word (capped by min_word) and its
        header's longest word; a column that does not wrap needs its natural width."""
        if not self.wrap:
            return self.natural()
        words = [len(word) for text in (self.name, *self.cells) for word in text.split()]
        longest = max(words, default=1)
        return min(longest, self.min_word) if self.min_word else longest

    def has_data(self) -> bool:
        return any(cell not in ("", "-") for cell in self.cells)


def table_width(columns: Sequence[Column]) -> int:
    return EDGE_CHARS + sum(c.width + PER_COLUMN_CHARS for c in columns)


def fit(columns: Sequence[Column], width: int | None) -> tuple[list[Column], list[str]]:
    """The columns that stay, with `.width` set, and the names of those left out for space.

    width None: no limit, every column at its natural width."""
    kept = list(columns)
    for column in kept:
        column.width = column.natural()
    if width is None:
        return kept, []
    dropped: list[str] = []
    while True:
        optional = [c for c in kept if c.priority < KEEP]
        if _shrink(kept, width) or not optional:
            return kept, dropped
        victim = min(optional, key=lambda c: c.priority)
        kept.remove(victim)
        dropped.append(victim.name)
        for column in kept:
            column.width = column.natural()


def overflows(columns: Sequence[Column], width: int | None) -> bool:
    """True when the columns `fit` kept are still wider than `width`: rich would cut cells, so
    the caller prints `stacked_lines` instead."""
    return width is not None and table_width(columns) > width


def _shrink(columns: Sequence[Column], width: int) -> bool:
    """Narrow the wrapping columns, widest first, to no less than their longest word; True
    when the table then fits `width`. Wrapping a parameter list keeps more figures in view
    than leaving a column out would."""
    excess = table_width(columns) - width
    for column in sorted((c for c in columns if c.wrap), key=lambda c: c.width, reverse=True):
        if excess <= 0:
            break
        give = min(excess, column.width - column.narrowest())
        if give > 0:
            column.width -= give
            excess -= give
    return excess <= 0


def rich_table(columns: Sequence[Column], title: str | None = None, caption: str | None = None) -> Table:
    """A rich Table with the widths `fit` chose: numbers and units never wrap; wrapping columns
    break between words only (rich folds a word only when it is longer than the column)."""
    table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for column in columns:
        table.add_column(
            column.name,
            width=column.width,
            justify=column.justify,  # type: ignore[arg-type]
            no_wrap=not column.wrap,
            overflow="fold" if column.wrap else "ignore",
        )
    for i in range(len(columns[0].cells) if columns else 0):
        table.add_row(*(Text(c.cells[i], style=c.styles[i] if c.styles else "") for c in columns))
    return table


def wrap_text(text: str, width: int | None, break_long: bool = False) -> list[str]:
    """`text` (lines separated by newlines) wrapped at `width` between words, never at a
    hyphen; a word longer than the width stays whole unless `break_long`. No width: the lines
    as they are."""
    if width is None:
        return text.split("\n")
    return [
        wrapped
        for line in text.split("\n")
        for wrapped in textwrap.wrap(line, max(width, 1), break_long_words=break_long, break_on_hyphens=False) or [""]
    ]


def plain_lines(columns: Sequence[Column], title: str | None = None, caption: str | None = None, width: int | None = None) -> str:
    """The same table as aligned plain text, for results too large for rich's per-cell layout
    (rich costs ~30 us a cell). Wrapping cells wrap between words, as in the rich table; the
    title and the caption wrap between words at `width` (None: as they are)."""
    lines = wrap_text(title, width) if title else []
    headers = [c.name.split("\n") for c in columns]
    for k in range(max((len(h) for h in headers), default=0)):
        texts = [(h[k] if k < len(h) else "") for h in headers]
        lines.append(
            " | ".join(
                t.rjust(c.width) if c.justify == "right" else t.ljust(c.width) for c, t in zip(columns, texts, strict=True)
            ).rstrip()
        )
    lines.append("-+-".join("-" * c.width for c in columns))
    for i in range(len(columns[0].cells) if columns else 0):
        parts = []
        for c in columns:
            cell_lines: list[str] = []
            for line in c.cells[i].split("\n"):
                cell_lines.extend(
                    textwrap.wrap(line, c.width, break_on_hyphens=False) or [""] if c.wrap and len(line) > c.width else [line]
                )
            parts.append(cell_lines)
        for k in range(max(len(p) for p in parts)):
            row = []
            for c, p in zip(columns, parts, strict=True):
                cell = p[k] if k < len(p) else ""
                row.append(cell.rjust(c.width) if c.justify == "right" else cell.ljust(c.width))
            lines.append(" | ".join(row).rstrip())
    if caption:
        lines.extend(wrap_text(caption, width))
    return "\n".join(lines)


def stacked_lines(columns: Sequence[Column], width: int, title: str | None = None, caption: str | None = None) -> str:
    """The table for a width too narrow for its columns side by side: each row a block of
    "Column: value" lines (blocks apart by a blank line), wrapped between words at `width`,
    continuation lines indented. Every column is kept and nothing is cut; only a single word
    wider than the whole width is broken, so that no line is wider than `width`."""
    width = max(width, 1)
    indent = "  " if width > 8 else ""

    def field(name: str, text: str) -> list[str]:
        out: list[str] = []
        for k, line in enumerate(text.split("\n")):
            out.extend(
                textwrap.wrap(
                    f"{name}: {line}" if k == 0 else line,
                    width,
                    initial_indent="" if k == 0 else indent,
                    subsequent_indent=indent,
                    break_long_words=True,
                    break_on_hyphens=False,
                )
                or [""]
            )
        return out

    lines = wrap_text(title, width, break_long=True) if title else []
    names = [" ".join(c.name.split()) for c in columns]
    for i in range(len(columns[0].cells) if columns else 0):
        if lines:
            lines.append("")
        for name, c in zip(names, columns, strict=True):
            if c.cells[i]:
                lines.extend(field(name, c.cells[i]))
    if caption:
        lines.extend(["", *wrap_text(caption, width, break_long=True)])
    return "\n".join(lines)
