"""The console's tables: a DataTable whose rows are each drawn as one pre-laid-out line.

Why: Textual's DataTable re-renders every visible *cell* through Rich whenever any cell changes, and
with 200 tablets heart-beating something changes every second: at 120x40 that is about 300 cell
renders, some 80-100 ms a frame on a small box. Laying the columns out ourselves (Rich measures
character cells, so accents, CJK and emoji stay aligned) leaves one cell per visible row, about a
tenth of the work, while keeping what DataTable does well: the cursor, keys, scrolling, row keys.

Rows are kept in step without rebuilding the table, so the cursor stays on its row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.text import Span, Text
from textual.widgets import DataTable

GAP = "  "
ROW = "row"  # the one DataTable column


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    max_width: int | None = None  # longer values end in "…"
    justify: str = "left"


class LinedTable(DataTable[Text]):
    """Rows of cells (``Text``), shown as aligned lines under a header line."""

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        super().__init__(**kwargs)
        self.spec = list(columns)
        self.widths = [cell_len(c.label) for c in self.spec]
        self._cells: dict[str, tuple[str, ...]] = {}
        # The one column exists from the start (a screen may show rows before this is mounted),
        # with a width we set: DataTable would otherwise measure the lines only when next idle,
        # and a frame drawn before that crops every row to the old width.
        self.add_column(self._header(), key=ROW)
        self._set_width()

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New columns (a session with other judges): the rows are laid out again."""
        self.spec = list(columns)
        self.widths = [cell_len(c.label) for c in self.spec]
        self.clear()
        self._cells.clear()
        self.columns[ROW].label = self._header()
        self._set_width()

    def show(self, rows: Mapping[str, Sequence[Text | str]]) -> None:
        """Make the table hold exactly ``rows`` (key -> one cell per column), in their order."""
        cells = {key: [c if isinstance(c, Text) else Text(c) for c in row] for key, row in rows.items()}
        widths = [cell_len(c.label) for c in self.spec]
        for row in cells.values():
            for i, (column, cell) in enumerate(zip(self.spec, row, strict=True)):
                width = cell.cell_len if column.max_width is None else min(cell.cell_len, column.max_width)
                widths[i] = max(widths[i], width)
        resized = widths != self.widths
        if resized:
            self.widths = widths
            self.columns[ROW].label = self._header()
            self._set_width()
        lines: dict[str, tuple[Text]] = {}
        for key, row in cells.items():
            line, shown = self._line(row)
            self._cells[key] = shown
            lines[key] = (line,)
        for key in list(self._cells):
            if key not in rows:
                del self._cells[key]
        sync_rows(self, lines)

    def cell_text(self, row_key: str, column_key: str) -> str:
        """What the row shows in one column (as drawn, truncation included)."""
        index = next(i for i, c in enumerate(self.spec) if c.key == column_key)
        return self._cells[row_key][index]

    def row_keys(self) -> list[str]:
        """Row keys, top to bottom."""
        return [str(key.value) for key in self.rows]

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)

    def _line(self, row: Sequence[Text]) -> tuple[Text, tuple[str, ...]]:
        """One row as one line: each cell cut to its column (with "…") and padded to it.

        Built as one string plus shifted style spans: this runs for every row on every refresh."""
        parts: list[str] = []
        spans: list[Span] = []
        shown: list[str] = []
        offset = 0
        last = len(row) - 1
        for index, (column, width, cell) in enumerate(zip(self.spec, self.widths, row, strict=True)):
            plain = cell.plain
            length = cell_len(plain)
            if length > width:
                cell = cell.copy()
                cell.truncate(width, overflow="ellipsis")
                plain = cell.plain
                length = cell_len(plain)
            # The last column is padded too: the header line (as wide as every label) sets no width.
            pad = " " * (width - length)
            if column.justify == "right":
                parts.append(pad)
                offset += len(pad)
            start = offset
            parts.append(plain)
            offset += len(plain)
            if cell.style:
                spans.append(Span(start, offset, cell.style))
            spans.extend(Span(start + sp.start, start + sp.end, sp.style) for sp in cell.spans)
            if column.justify != "right":
                parts.append(pad)
                offset += len(pad)
            if index < last:
                parts.append(GAP)
                offset += len(GAP)
            shown.append(plain)
        return Text("".join(parts), spans=spans, no_wrap=True, overflow="crop"), tuple(shown)

    def _set_width(self) -> None:
        column = self.columns[ROW]
        column.auto_width = False
        column.width = sum(self.widths) + len(GAP) * (len(self.widths) - 1)
        self.refresh(layout=True)

    def _header(self) -> Text:
        return Text(GAP).join(
            Text(c.label.rjust(w) if c.justify == "right" else c.label.ljust(w), style="bold")
            for c, w in zip(self.spec, self.widths, strict=True)
        )


def sync_rows(table: DataTable[Any], rows: Mapping[str, Sequence[Any]], update_width: bool = False) -> None:
    """Make ``table`` hold exactly ``rows`` (key -> cells), in their order.

    When the order is unchanged, changed cells are updated in place, new rows appended and vanished
    rows removed: cheap, which is the common case of a refresh. When the order changed (a new sort,
    a row moving up), the rows are laid out again and the cursor follows the row it was on."""
    columns = list(table.columns.keys())
    current_order = [key.value for key in table.rows]
    wanted = list(rows.keys())
    kept = [key for key in current_order if key in rows]
    if kept != wanted[: len(kept)]:
        _relayout(table, rows)
        return
    for key in set(current_order) - rows.keys():
        table.remove_row(key)
    existing = set(kept)
    for key, cells in rows.items():
        if key in existing:
            current = table.get_row(key)
            for column, old, new in zip(columns, current, cells, strict=True):
                if _plain(old) != _plain(new):
                    table.update_cell(key, column, new, update_width=update_width)
        else:
            table.add_row(*cells, key=key)


def _relayout(table: DataTable[Any], rows: Mapping[str, Sequence[Any]]) -> None:
    selected = None
    if table.row_count:
        selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    column = table.cursor_coordinate.column
    table.clear()
    for key, cells in rows.items():
        table.add_row(*cells, key=key)
    if selected in rows:
        table.move_cursor(row=table.get_row_index(selected), column=column, animate=False)


def _plain(cell: Any) -> Any:
    # Rich Text compares by identity; its plain string and styles decide whether it changed.
    if isinstance(cell, Text):
        return (cell.plain, str(cell.style), tuple(str(s) for s in cell.spans))
    return cell
