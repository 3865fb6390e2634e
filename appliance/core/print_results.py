"""Printed results: the PDF a venue pins up or hands to the announcer (issue 19, "Print").

Two documents, both from the wire's ``ResultsOut`` (appliance/shared/results_wire.py), so the paper
says exactly what the console and the admin API say:

* ``results_pdf``: per rank_within group a page (or more) with the event, the group, the sessions
  it covers and their lock and sign-offs, the time the results were made, the rule used in words, a
  PROVISIONAL banner when any result is not final, and a table of rank, entry, title, studio, score,
  award and PROVISIONAL/FINAL per row;
* ``judges_sheets_pdf``: per entry each panel judge's values per criterion and sheet total, the
  judges a trimmed mean dropped marked, and the result in words.

Made with fpdf2 and the system's fonts (``find_fonts``): DejaVu Sans for Latin, Greek and Cyrillic
with their accents, a CJK fallback (Droid Sans Fallback, or Noto CJK) for the characters it lacks,
then Symbola, when the box has it, for symbols and emoji (monochrome, up to Unicode 9: the sparkles
and flames of entry titles); the setting ``results_fonts`` names other files. A character no font
carries stops the print with ``FontsMissing`` (naming the Debian packages to install) rather than
printing a blank box. Pages fit A4 and Letter (``results_paper``); the file is written atomically.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, get_args

import msgspec
from fpdf import FPDF
from fpdf.fonts import FontFace, TTFFont

from appliance.core.box import current_event_id
from appliance.core.event_package.format import criterion_rule_of, plain_number
from appliance.core.results import read_sheets
from appliance.shared.errors import FontsMissing
from appliance.shared.results_wire import ResultGroup, ResultRow, ResultsOut, SessionState
from appliance.shared.secrets_files import atomic_write_from

Paper = Literal["A4", "Letter"]
PAPERS: tuple[str, ...] = get_args(Paper)

# The Debian packages whose fonts printing finds by itself; the error for missing fonts names them.
FONT_PACKAGES = "fonts-dejavu-core fonts-droid-fallback fonts-symbola"
_PACKAGES = FONT_PACKAGES.split()
_INSTALL = (
    f"install Debian's {', '.join(_PACKAGES[:-1])} and {_PACKAGES[-1]}"
    f" (`sudo apt-get install {FONT_PACKAGES}`) or name font files in the setting results_fonts"
)
# Where Debian puts them, for a box without fontconfig's fc-list.
_KNOWN_REGULAR = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",)
_KNOWN_BOLD = ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",)
_KNOWN_CJK = (
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
_KNOWN_SYMBOLS = ("/usr/share/fonts/truetype/ancient-scripts/Symbola_hint.ttf",)
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc")

_TEXT = "text"
_FALLBACK = "fallback{}"
_DARK = (0, 0, 0)
_GREY = (110, 110, 110)
_BANNER = (170, 20, 20)
_DROPPED_FILL = (225, 225, 225)


class PrintFonts(msgspec.Struct, frozen=True):
    """The font files a print embeds: ``regular`` and ``bold`` for the text, ``fallbacks`` (in order)
    for the characters they lack."""

    regular: Path
    bold: Path
    fallbacks: tuple[Path, ...] = ()


def find_fonts(configured: Sequence[str] = ()) -> PrintFonts:
    """The fonts to print with: the files of the setting ``results_fonts`` (the first for the text,
    its "-Bold" sibling if there is one for headings, the others as fallbacks), else the system's
    DejaVu Sans, a CJK fallback and (if present) Symbola for symbols and emoji, found by fontconfig
    or at Debian's paths. Raises ``FontsMissing`` without DejaVu Sans or a CJK font; without Symbola
    only a print with a character no other font carries is refused (``check_coverage``)."""
    if configured:
        paths = [Path(name) for name in configured]
        for path in paths:
            if not path.is_file():
                raise FontsMissing(f"results_fonts: {path} is not a font file on this box; {_INSTALL}")
            if path.suffix.lower() not in _FONT_SUFFIXES:
                raise FontsMissing(f"results_fonts: {path} is not a .ttf, .otf or .ttc font file")
        regular = paths[0]
        bold = regular.with_name(f"{regular.stem}-Bold{regular.suffix}")
        return PrintFonts(regular, bold if bold.is_file() else regular, tuple(paths[1:]))
    regular_found = _first(_fc_list("DejaVu Sans:style=Book"), _KNOWN_REGULAR, "DejaVuSans.")
    cjk = _first(_fc_list(":lang=ja"), _KNOWN_CJK, "DroidSansFallback")
    if regular_found is None or cjk is None:
        lacking = " and ".join(
            what for what, found in (("DejaVu Sans", regular_found), ("a CJK font", cjk)) if found is None
        )
        raise FontsMissing(f"printing results needs {lacking}: {_INSTALL}")
    bold_found = _first(_fc_list("DejaVu Sans:style=Bold"), _KNOWN_BOLD, "DejaVuSans-Bold.")
    symbols = _first(_fc_list("Symbola"), _KNOWN_SYMBOLS, "Symbola")
    fallbacks = (cjk,) if symbols is None else (cjk, symbols)
    return PrintFonts(regular_found, bold_found or regular_found, fallbacks)


def _fc_list(pattern: str) -> list[Path]:
    """The font files fontconfig lists for ``pattern`` (none without fontconfig)."""
    fc_list = shutil.which("fc-list")
    if fc_list is None:
        return []
    try:
        done = subprocess.run(
            [fc_list, "-f", "%{file}\n", pattern], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(Path(line) for line in done.stdout.splitlines() if line.strip())


def _first(listed: Iterable[Path], known: Iterable[str], preferred: str) -> Path | None:
    """The preferred file (its name containing ``preferred``) among those listed and the known paths,
    else any listed one that fpdf2 can embed."""
    candidates = [p for p in [*listed, *map(Path, known)] if p.suffix.lower() in _FONT_SUFFIXES]
    present = [p for p in candidates if p.is_file()]
    best = [p for p in present if preferred in p.name]
    chosen = best or present
    return chosen[0] if chosen else None


# -- the judges' sheets' inputs ---------------------------------------------------------------------


class SheetCriterion(msgspec.Struct, frozen=True):
    """A criterion as a judges' sheet prints it: its label, and how it counts (a deduction, a
    weight other than 1)."""

    key: str
    label: str
    kind: str = "score"
    weight: str = "1"


class JudgesValues(msgspec.Struct, frozen=True):
    """What the judges' sheets print besides the results: the event's criteria in order and each
    current sheet's values as exact decimal text (entry id -> judge id -> criterion key -> value)."""

    criteria: tuple[SheetCriterion, ...]
    values: dict[str, dict[str, dict[str, str]]]


def judges_values(conn: sqlite3.Connection) -> JudgesValues:
    """The current event's criteria and current sheets' values, in the caller's read (no event: none)."""
    event_id = current_event_id(conn)
    if event_id is None:
        return JudgesValues((), {})
    criteria = tuple(
        _criterion(key, label, extra)
        for key, label, extra in conn.execute(
            "SELECT key, label, extra FROM criteria WHERE event_id = ? ORDER BY position", (event_id,)
        )
    )
    values = {
        entry_id: {
            judge_id: {key: format(value, "f") for key, value in sheet.items()}
            for judge_id, sheet in judges.items()
        }
        for entry_id, judges in read_sheets(conn, event_id).items()
    }
    return JudgesValues(criteria, values)


def _criterion(key: str, label: str, extra: str) -> SheetCriterion:
    rule = criterion_rule_of(extra)
    return SheetCriterion(key, label or key, rule.kind, plain_number(rule.weight))


# -- the documents ----------------------------------------------------------------------------------


def results_pdf(results: ResultsOut, path: Path, *, paper: Paper = "A4", fonts: PrintFonts) -> None:
    """Write the results of ``results``, a page per group, to ``path`` (atomically)."""
    doc = _Document(f"Results — {results.event_name}", results, paper, fonts)
    doc.check_coverage(_results_text(results))
    if not results.groups:
        doc.start_page()
        doc.line("No entries to show.", size=11)
    for group in results.groups:
        doc.start_page()
        _group_page(doc, results, group)
    doc.save(path)


def judges_sheets_pdf(
    results: ResultsOut, values: JudgesValues, path: Path, *, paper: Paper = "A4", fonts: PrintFonts
) -> None:
    """Write each entry's judges' sheets (values per criterion, totals, dropped judges marked) to
    ``path`` (atomically), grouped as in ``results``."""
    doc = _Document(f"Judges' sheets — {results.event_name}", results, paper, fonts)
    criteria = values.criteria
    doc.check_coverage([*_results_text(results), *(c.label for c in criteria)])
    if not results.groups:
        doc.start_page()
        doc.line("No entries to show.", size=11)
    for group in results.groups:
        doc.start_page()
        doc.line(_group_title(group), size=14, bold=True)
        doc.line(f"Rule: {group.rule}", size=9, color=_GREY)
        doc.pdf.ln(2)
        for row in group.rows:
            _entry_sheets(doc, results, row, criteria, values.values.get(row.entry_id, {}))
    doc.save(path)


def _group_page(doc: _Document, results: ResultsOut, group: ResultGroup) -> None:
    pdf = doc.pdf
    doc.line(_group_title(group), size=15, bold=True)
    doc.line(results.event_name, size=11)
    states = {state.session_id: state for state in results.sessions}
    for session_id in dict.fromkeys(row.session_id for row in group.rows):
        name = next(
            (r.session_name for r in group.rows if r.session_id == session_id and r.session_name), None
        )
        doc.line(_session_words(session_id, name, states.get(session_id)), size=9)
    doc.line(f"Results as of {results.generated_at}", size=9)
    doc.line(f"Rule: {group.rule}", size=9, color=_GREY)
    provisional = [row for row in group.rows if not row.final]
    if provisional:
        doc.banner(
            f"PROVISIONAL — {len(provisional)} of {len(group.rows)} results not final: a result is final "
            "once its session is locked and every panel judge has signed off"
        )
    pdf.ln(2)
    pdf.set_font(_TEXT, size=9)
    with pdf.table(
        col_widths=(11, 12, 50, 30, 14, 20, 26),
        text_align=("CENTER", "LEFT", "LEFT", "LEFT", "RIGHT", "LEFT", "CENTER"),
        headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        line_height=pdf.font_size * 1.6,
        repeat_headings=1,
    ) as table:
        heading = table.row()
        for title in ("Rank", "Entry", "Title", "Studio", "Score", "Award", "Status"):
            heading.cell(title)
        for row in group.rows:
            cells = table.row()
            cells.cell("—" if row.rank is None else str(row.rank))
            cells.cell(row.entry_id)
            cells.cell(row.title)
            cells.cell(row.studio or "")
            cells.cell(row.score or "—")
            cells.cell(row.award or "—")
            cells.cell(_status(row), style=FontFace(emphasis="BOLD", color=None if row.final else _BANNER))


def _entry_sheets(
    doc: _Document,
    results: ResultsOut,
    row: ResultRow,
    criteria: tuple[SheetCriterion, ...],
    sheets: dict[str, dict[str, str]],
) -> None:
    pdf = doc.pdf
    state = next((s for s in results.sessions if s.session_id == row.session_id), None)
    judges = sorted({*(state.panel if state else ()), *sheets, *row.totals})
    # Keep an entry's block on one page when it fits on one.
    needed = 30 + 7 * (len(judges) + 1)
    if pdf.will_page_break(min(needed, pdf.eph - 20)):
        pdf.add_page()
    rank = "unranked" if row.rank is None else f"rank {row.rank}"
    doc.line(f"{row.entry_id}  {row.title}", size=12, bold=True)
    doc.line(
        " · ".join(
            part
            for part in (
                row.studio or "",
                f"session {row.session_name or row.session_id}",
                f"score {row.score or '—'}",
                rank,
                row.award or "",
                _status(row),
            )
            if part
        ),
        size=9,
    )
    pdf.set_font(_TEXT, size=8)
    widths = (14, *(max(10, 60 // max(len(criteria), 1)) for _ in criteria), 14, 20)
    with pdf.table(
        col_widths=widths,
        text_align=("LEFT", *("RIGHT" for _ in criteria), "RIGHT", "LEFT"),
        headings_style=FontFace(emphasis="BOLD", fill_color=(230, 230, 230)),
        line_height=pdf.font_size * 1.6,
    ) as table:
        heading = table.row()
        heading.cell("Judge")
        for criterion in criteria:
            heading.cell(_criterion_heading(criterion))
        heading.cell("Total")
        heading.cell("")
        for judge_id in judges:
            values = sheets.get(judge_id)
            dropped = judge_id in row.dropped
            style = FontFace(fill_color=_DROPPED_FILL) if dropped else None
            cells = table.row()
            cells.cell(judge_id, style=style)
            for criterion in criteria:
                cells.cell("" if values is None else values.get(criterion.key, "—"), style=style)
            cells.cell(row.totals.get(judge_id, "—"), style=style)
            note = "DROPPED" if dropped else "" if values is not None else "not scored"
            cells.cell(note, style=FontFace(emphasis="BOLD", fill_color=_DROPPED_FILL) if dropped else None)
    doc.line(row.explanation, size=8, color=_GREY)
    pdf.ln(3)


def _criterion_heading(criterion: SheetCriterion) -> str:
    marks = []
    if criterion.kind == "deduction":
        marks.append("deduction")
    if criterion.weight != "1":
        marks.append(f"×{criterion.weight}")
    return criterion.label + (f" ({', '.join(marks)})" if marks else "")


def _status(row: ResultRow) -> str:
    return "FINAL" if row.final else "PROVISIONAL"


def _group_title(group: ResultGroup) -> str:
    if not group.fields:
        return "All entries"
    return ", ".join(
        f"{name} {value if value is not None else '(none)'}" for name, value in group.fields.items()
    )


def _session_words(session_id: str, name: str | None, state: SessionState | None) -> str:
    label = f"Session {session_id}" + (f" ({name})" if name and name != session_id else "")
    if state is None:
        return label
    lock = "locked" if state.locked else "not locked"
    signed = (
        f"signed off by {len(state.signed_off)} of {len(state.panel)} panel judges"
        + (f" ({', '.join(state.signed_off)})" if state.signed_off else "")
        if state.panel
        else "no panel judge"
    )
    return f"{label}: {lock}; {signed}"


def _results_text(results: ResultsOut) -> list[str]:
    """Every text a print of ``results`` may show (for the font coverage check)."""
    texts = [results.event_name, results.generated_at]
    for group in results.groups:
        texts.append(_group_title(group))
        texts.append(group.rule)
        for row in group.rows:
            texts.extend(
                (row.entry_id, row.title, row.studio or "", row.award or "", row.explanation, row.session_id)
            )
            texts.append(row.session_name or "")
    return texts


class _Document:
    """An fpdf2 document with the fonts loaded, a header (the document's title) and a footer (page
    x of y)."""

    def __init__(self, title: str, results: ResultsOut, paper: Paper, fonts: PrintFonts) -> None:
        if paper not in PAPERS:
            raise ValueError(f"paper must be one of {', '.join(PAPERS)}, not {paper!r}")
        self.title = title
        self.pdf = pdf = _Pdf(self, paper)
        pdf.set_margins(15, 15, 15)
        pdf.set_auto_page_break(True, margin=16)
        pdf.set_title(title)
        pdf.set_creator("venuebox")
        pdf.set_subject(f"{results.event_id}, results as of {results.generated_at}")
        pdf.add_font(_TEXT, "", fonts.regular)
        pdf.add_font(_TEXT, "B", fonts.bold)
        names = []
        for index, fallback in enumerate(fonts.fallbacks):
            name = _FALLBACK.format(index)
            pdf.add_font(name, "", fallback)
            names.append(name)
        if names:
            pdf.set_fallback_fonts(names, exact_match=False)
        pdf.set_font(_TEXT, size=10)

    def check_coverage(self, texts: Iterable[str]) -> None:
        """Raise ``FontsMissing`` when a character of ``texts`` is in none of the fonts."""
        covered = [font.cmap for font in self.pdf.fonts.values() if isinstance(font, TTFFont)]
        lacking = sorted(
            {
                char
                for text in texts
                for char in text
                if char.isprintable() and not char.isspace() and not any(ord(char) in c for c in covered)
            }
        )
        if lacking:
            shown = " ".join(f"{char} (U+{ord(char):04X})" for char in lacking[:8])
            more = f" and {len(lacking) - 8} more" if len(lacking) > 8 else ""
            raise FontsMissing(f"no font on this box can print {shown}{more}: {_INSTALL}")

    def start_page(self) -> None:
        self.pdf.add_page()

    def line(
        self, text: str, *, size: float, bold: bool = False, color: tuple[int, int, int] = _DARK
    ) -> None:
        pdf = self.pdf
        pdf.set_font(_TEXT, "B" if bold else "", size)
        pdf.set_text_color(*color)
        pdf.multi_cell(0, size * 0.5, text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*_DARK)

    def banner(self, text: str) -> None:
        pdf = self.pdf
        pdf.ln(1)
        pdf.set_font(_TEXT, "B", 10)
        pdf.set_fill_color(*_BANNER)
        pdf.set_text_color(255, 255, 255)
        pdf.multi_cell(0, 6, text, fill=True, padding=2, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*_DARK)
        pdf.set_fill_color(255, 255, 255)

    def save(self, path: Path) -> None:
        """Write the document to ``path`` atomically (readable by all: results are for announcing)."""
        fill: Callable[[Path], None] = lambda tmp: self.pdf.output(str(tmp))  # noqa: E731
        atomic_write_from(path, fill, mode=0o644)


class _Pdf(FPDF):
    def __init__(self, doc: _Document, paper: Paper) -> None:
        super().__init__(orientation="portrait", unit="mm", format=paper)
        self._doc = doc

    def header(self) -> None:
        self.set_font(_TEXT, "", 8)
        self.set_text_color(*_GREY)
        self.cell(0, 5, self._doc.title, new_x="LMARGIN", new_y="NEXT")
        self.set_text_color(*_DARK)
        self.ln(2)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font(_TEXT, "", 8)
        self.set_text_color(*_GREY)
        self.cell(0, 5, f"Page {self.page_no()} of {{nb}}", align="C")
        self.set_text_color(*_DARK)
