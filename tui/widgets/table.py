"""The console's tables: one pre-laid-out line per row, drawn with Textual's line API.

Why not DataTable: it re-renders every visible cell through Rich, with its styles, whenever any cell
changes, and with 200 tablets heart-beating something changes every second (about 35 ms a frame
at 120x40 on a small box, on top of the refresh). Here a row is one line of text laid out once per
refresh (Rich measures character cells, so accents, CJK and emoji stay aligned) and turned into a
strip only when it changed: a frame costs what changed, not what is visible.

What a tech needs from a table is kept: a header that stays put, a row cursor (arrows, Page Up/Down,
Home/End, the mouse), scrolling both ways, Enter to open a row, rows known by key so the cursor
stays on its row when rows move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Span, Text
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from appliance.shared.tablet_text import printable

GAP = "  "


# A cell as the layout needs it: plain text, its style, its inner spans, its width in cells.
_Cell = tuple[str, "str | Style", "tuple[Span, ...] | list[Span]", int]


def _cell(value: Text | str) -> _Cell:
    # Control characters would move the terminal's cursor, bidi overrides reorder a name: a device
    # name or an alert naming it is not trusted. Escaped as the CLI prints them.
    if isinstance(value, str):
        plain = printable(value)
        return plain, "", (), cell_len(plain)
    plain = printable(value.plain)
    if plain != value.plain:  # the inner spans no longer fit the escaped text: its own style stays
        return plain, value.style, (), cell_len(plain)
    return plain, value.style, value.spans, cell_len(plain)


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    max_width: int | None = None  # longer values end in "…"
    justify: str = "left"


class LinedTable(ScrollView, can_focus=True):
    """Rows of cells (``Text``) under a header line; a row cursor; Enter selects."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Open", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "lined-table--header",
        "lined-table--cursor",
        "lined-table--even",
    }
    DEFAULT_CSS = """
    LinedTable {
        background: $surface;
        scrollbar-gutter: stable;
    }
    LinedTable > .lined-table--header {
        text-style: bold;
        background: $panel;
        color: $foreground;
    }
    LinedTable > .lined-table--cursor {
        background: $block-cursor-blurred-background;
        text-style: bold;
    }
    LinedTable:focus > .lined-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
    }
    LinedTable > .lined-table--even {
        background: $surface-lighten-1;
    }
    """

    cursor_row: reactive[int] = reactive(0, init=False)

    class Highlighted(Message):
        """The cursor moved to the row ``key``."""

        def __init__(self, table: LinedTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LinedTable:
            return self.table

    class Selected(Highlighted):
        """Enter (or a click) on the row ``key``."""

    def __init__(self, columns: Sequence[Column], *, zebra_stripes: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = list(columns)
        self.zebra_stripes = zebra_stripes
        self.widths = [cell_len(c.label) for c in self.spec]
        self._keys: list[str] = []
        self._lines: dict[str, Text] = {}
        self._cells: dict[str, tuple[str, ...]] = {}
        self._strips: dict[tuple[str, int], tuple[Text, Strip]] = {}
        self._header_strip: Strip | None = None

    # Data -----------------------------------------------------------------------------------------
    @property
    def row_count(self) -> int:
        return len(self._keys)

    def row_keys(self) -> list[str]:
        """Row keys, top to bottom."""
        return list(self._keys)

    def selected_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def cell_text(self, row_key: str, column_key: str) -> str:
        """What the row shows in one column (as drawn, truncation included)."""
        index = next(i for i, c in enumerate(self.spec) if c.key == column_key)
        return self._cells[row_key][index]

    def set_columns(self, columns: Sequence[Column]) -> None:
        """New columns (a session with other judges): no rows until the next ``show``."""
        self.spec = list(columns)
        self.widths = [cell_len(c.label) for c in self.spec]
        self._keys, self._lines, self._cells = [], {}, {}
        self._strips.clear()
        self._header_strip = None
        self.cursor_row = 0
        self._resize()

    def show(self, rows: Mapping[str, Sequence[Text | str]]) -> None:
        """Make the table hold exactly ``rows`` (key -> one cell per column), in their order. The
        cursor stays on its row if that row is still there. A cell is a ``Text`` (styled) or a
        plain ``str`` (taken as it is, never as markup)."""
        cells = {key: [_cell(c) for c in row] for key, row in rows.items()}
        widths = [cell_len(c.label) for c in self.spec]
        for row in cells.values():
            for i, (column, cell) in enumerate(zip(self.spec, row, strict=True)):
                length = cell[3]
                if column.max_width is not None:
                    length = min(length, column.max_width)
                widths[i] = max(widths[i], length)
        if widths != self.widths:
            self.widths = widths
            self._header_strip = None
        selected = self.selected_key()
        lines: dict[str, Text] = {}
        shown: dict[str, tuple[str, ...]] = {}
        for key, row in cells.items():
            lines[key], shown[key] = self._line(row)
        # Only rows whose line changed are drawn again: keep the Text of unchanged ones, so the
        # strip cache (keyed by row, checked by identity) still holds.
        for key, line in lines.items():
            old = self._lines.get(key)
            if old is not None and old.plain == line.plain and old.spans == line.spans:
                lines[key] = old
        self._keys, self._lines, self._cells = list(lines), lines, shown
        for cached in [k for k in self._strips if k[0] not in lines]:
            del self._strips[cached]
        if selected in lines:
            self.set_reactive(LinedTable.cursor_row, self._keys.index(selected))
        else:
            self.set_reactive(LinedTable.cursor_row, min(self.cursor_row, max(len(self._keys) - 1, 0)))
        self._resize()

    # Drawing --------------------------------------------------------------------------------------
    def _resize(self) -> None:
        width = sum(self.widths) + len(GAP) * (len(self.widths) - 1)
        self.virtual_size = Size(width, len(self._keys) + 1)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:  # the header stays put
            strip = self._header()
        else:
            index = scroll_y + y - 1
            if index >= len(self._keys):
                return Strip.blank(width, self.rich_style)
            strip = self._row_strip(index)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _row_strip(self, index: int) -> Strip:
        key = self._keys[index]
        line = self._lines[key]
        if index == self.cursor_row:
            look = 2 if self.has_focus else 3
        else:
            look = 1 if (self.zebra_stripes and index % 2) else 0
        cached = self._strips.get((key, look))
        if cached is not None and cached[0] is line:
            return cached[1]
        base = self.rich_style
        if look >= 2:
            base = base + self.get_component_rich_style("lined-table--cursor")
        elif look == 1:
            base = base + self.get_component_rich_style("lined-table--even")
        strip = self._strip(line, base)
        self._strips[(key, look)] = (line, strip)
        return strip

    def _header(self) -> Strip:
        if self._header_strip is None:
            header = Text(GAP).join(
                Text(c.label.rjust(w) if c.justify == "right" else c.label.ljust(w))
                for c, w in zip(self.spec, self.widths, strict=True)
            )
            self._header_strip = self._strip(
                header, self.rich_style + self.get_component_rich_style("lined-table--header")
            )
        return self._header_strip

    def _strip(self, line: Text, base: Style) -> Strip:
        segments = [
            Segment(text, base + style if style else base) for text, style, _ in line.render(self.app.console)
        ]
        width = max(self.virtual_size.width, self.size.width)
        return Strip(segments, line.cell_len).extend_cell_length(width, base)

    def _line(self, row: Sequence[_Cell]) -> tuple[Text, tuple[str, ...]]:
        """One row as one line: each cell cut to its column (with "…") and padded to it.

        Built as one string plus shifted style spans: this runs for every row on every refresh."""
        parts: list[str] = []
        spans: list[Span] = []
        shown: list[str] = []
        offset = 0
        last = len(row) - 1
        for index, (column, width, cell) in enumerate(zip(self.spec, self.widths, row, strict=True)):
            plain, style, cell_spans, length = cell
            if length > width:
                cut = Text(plain, style=style, spans=list(cell_spans))
                cut.truncate(width, overflow="ellipsis")
                plain, style, cell_spans, length = _cell(cut)
            pad = " " * (width - length)
            if column.justify == "right":
                parts.append(pad)
                offset += len(pad)
            start = offset
            parts.append(plain)
            offset += len(plain)
            if style:
                spans.append(Span(start, offset, style))
            if cell_spans:
                spans.extend(Span(start + sp.start, start + sp.end, sp.style) for sp in cell_spans)
            if column.justify != "right":
                parts.append(pad)
                offset += len(pad)
            if index < last:
                parts.append(GAP)
                offset += len(GAP)
            shown.append(plain)
        return Text("".join(parts), spans=spans, no_wrap=True, overflow="crop"), tuple(shown)

    def notify_style_update(self) -> None:
        # A theme change: every cached strip has the old colours.
        super().notify_style_update()
        self._strips.clear()
        self._header_strip = None

    def on_resize(self, _: events.Resize) -> None:
        self._strips.clear()  # strips are as wide as the view
        self._header_strip = None

    def _on_focus(self, event: events.Focus) -> None:
        super()._on_focus(event)
        self.refresh()

    def _on_blur(self, event: events.Blur) -> None:
        super()._on_blur(event)
        self.refresh()

    # Cursor ---------------------------------------------------------------------------------------
    def watch_cursor_row(self, old: int, new: int) -> None:
        self._keep_in_view()
        self.refresh()
        if self._keys:
            self.post_message(self.Highlighted(self, self._keys[new]))

    def validate_cursor_row(self, row: int) -> int:
        return max(0, min(row, len(self._keys) - 1)) if self._keys else 0

    def _keep_in_view(self) -> None:
        visible = max(self.size.height - 1, 1)
        top = self.scroll_offset.y
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def action_cursor(self, step: int) -> None:
        self.cursor_row += step

    def action_page(self, step: int) -> None:
        self.cursor_row += step * max(self.size.height - 2, 1)

    def action_first(self) -> None:
        self.cursor_row = 0

    def action_last(self) -> None:
        self.cursor_row = len(self._keys) - 1

    def action_select(self) -> None:
        if self._keys:
            self.post_message(self.Selected(self, self._keys[self.cursor_row]))

    async def _on_click(self, event: events.Click) -> None:
        row = self.scroll_offset.y + event.y - 1
        if event.y >= 1 and 0 <= row < len(self._keys):
            self.cursor_row = row
            if event.chain > 1:
                self.action_select()
