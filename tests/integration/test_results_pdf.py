"""Printed results (appliance/core/print_results.py), checked as a person at the venue would see them:
a real event imported, real sheets through the ledger, a session signed off and locked, the results
computed and printed, then the PDF read back with Debian's poppler-utils (``pdftotext`` for its
text, ``pdftoppm`` to render a page, ``pdfinfo`` for the paper size, ``pdffonts`` for the fonts
embedded): every entry, the accents and the CJK title are there, on A4 and on Letter; the sample
event's emoji titles print; and fonts that are missing stop the print with a line naming the
packages to install."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from PIL import Image

from appliance.core import personal
from appliance.core.config import Config, ConfigError, load_config
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.print_results import (
    FONT_PACKAGES,
    Paper,
    PrintFonts,
    find_fonts,
    judges_sheets_pdf,
    judges_values,
    results_pdf,
)
from appliance.core.results_out import results_out
from appliance.core.sessions import lock, sign_off
from appliance.core.storage import Store
from appliance.shared.errors import FontsMissing
from appliance.shared.results_wire import ResultsOut
from provisioning.event_import import import_package, load_package
from tests.conftest import make_box, needs_tool, paired_device, venuebox
from tests.unit.test_event_import import write_package

pytestmark = needs_tool(
    all(shutil.which(tool) for tool in ("pdftotext", "pdftoppm", "pdfinfo", "pdffonts")),
    "needs Debian's poppler-utils (pdftotext, pdftoppm, pdfinfo, pdffonts); .ci/run installs it",
)

EVENT = """{
  "id": "gala-2026", "name": "Gala d'Été 2026", "timezone": "Europe/Paris",
  "criteria": [
    {"key": "technique", "label": "Technique", "min": 0, "max": 10, "step": 0.1, "weight": 2},
    {"key": "artistry", "label": "Artistry", "min": 0, "max": 10, "step": 0.1},
    {"key": "fall", "label": "Falls", "min": 0, "max": 3, "step": 0.5, "kind": "deduction"}
  ],
  "sessions": [{"id": "S1", "name": "Samedi matin"}, {"id": "S2", "name": "Dimanche"}],
  "scoring": {
    "judges": "trimmed_mean", "drop_highest": 1, "drop_lowest": 1, "precision": 2,
    "ties": ["criterion:technique", "highest_single"],
    "awards": [{"label": "Platinum", "min": 27}, {"label": "Gold", "min": 25}]
  }
}"""
ENTRIES = (
    "entry_id,session_id,order,title,category,division,studio\n"
    "101,S1,1,Élan — Ünïcødé,Solo,Teen,Studio Ñandú\n"
    "102,S1,2,東京の夜,Solo,Teen,さくら Dance\n"
    "103,S1,3,Firebird,Duet,Teen,Kraków Ballet\n"
    "201,S2,1,Żółć Tango,Solo,Teen,Ørsted Dans\n"
)
JUDGES = "judge_id,name,sessions\nJ1,Ana,*\nJ2,Bo,*\nJ3,Chloé,*\n"
TITLES = {"101": "Élan — Ünïcødé", "102": "東京の夜", "103": "Firebird", "201": "Żółć Tango"}
# judge -> entry -> (technique, artistry, fall); J3 has not scored 201 yet (Sunday is not over).
SHEETS: dict[str, dict[str, tuple[float, float, float]]] = {
    "J1": {"101": (9.5, 9.0, 0), "102": (9.0, 8.5, 0.5), "103": (8.0, 8.0, 0), "201": (7.0, 7.5, 0)},
    "J2": {"101": (9.8, 9.6, 0), "102": (8.6, 8.8, 0), "103": (8.5, 8.2, 0), "201": (7.2, 7.0, 0)},
    "J3": {"101": (8.9, 9.1, 0.5), "102": (9.2, 9.0, 0), "103": (7.9, 8.1, 0)},
}


def box_with_results(tmp_path: Path) -> tuple[Config, Store, ResultsOut]:
    """A real box: the event imported, every sheet through the ledger, Saturday (S1) signed off by
    its whole panel and locked, Sunday (S2) still open; its results as every surface gets them."""
    package = write_package(tmp_path / "package", EVENT, ENTRIES, JUDGES)
    config = make_box(tmp_path / "box", package=None)
    key = personal.load_key(config.data_key_path)
    store = Store(config.db_path)
    loaded = load_package(package)
    store.write_sync(lambda conn: import_package(conn, loaded, key, "test"))
    devices = {judge: paired_device(store, judge) for judge in SHEETS}
    for judge, scored in SHEETS.items():
        for entry_id, (technique, artistry, fall) in scored.items():
            values = {"technique": technique, "artistry": artistry, "fall": fall}
            sheet = SheetSubmission(str(uuid.uuid4()), entry_id, values, "2026-06-20T10:00:00+02:00")
            [receipt] = store.write_sync(partial(submit_sheets, items=[(devices[judge], sheet)]))
            assert isinstance(receipt, SheetReceipt) and receipt.status == 201, receipt
    for device in devices.values():
        store.write_sync(partial(sign_off, device=device, session_id="S1"))
    store.write_sync(lambda c: lock(c, "S1", "awards at noon"))
    results = store.query(lambda c: results_out(c, generated_at="2026-06-20T12:00:00Z"))
    return config, store, results


@pytest.fixture
def venue(tmp_path: Path) -> Iterator[tuple[Store, ResultsOut]]:
    _, store, results = box_with_results(tmp_path)
    with store:
        yield store, results


def pdftotext(path: Path, *, layout: bool = False) -> str:
    args = ["pdftotext", "-enc", "UTF-8", *(["-layout"] if layout else []), str(path), "-"]
    return subprocess.run(args, capture_output=True, check=True, timeout=60).stdout.decode("utf-8")


def pdfinfo(path: Path) -> dict[str, str]:
    out = subprocess.run(["pdfinfo", str(path)], capture_output=True, check=True, timeout=60).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.decode().splitlines())}


def dark_share(path: Path, page: int = 1) -> tuple[tuple[int, int], float]:
    """Render ``page`` at 50 dpi with pdftoppm; the image's size and the share of its pixels that
    are dark (ink, not paper)."""
    prefix = path.with_name(f"{path.stem}-page")
    subprocess.run(
        [
            "pdftoppm",
            "-png",
            "-r",
            "50",
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            str(path),
            str(prefix),
        ],
        check=True,
        timeout=60,
    )
    with Image.open(prefix.with_suffix(".png")) as image:
        grey = image.convert("L")
        histogram = grey.histogram()
        return grey.size, sum(histogram[:128]) / (grey.size[0] * grey.size[1])


def rows_of(text: str) -> dict[str, str]:
    """The results table's lines (pdftotext -layout) by entry id: "rank  entry  title ..."."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[1] in TITLES:
            rows[words[1]] = line
    return rows


@pytest.mark.parametrize(
    ("paper", "size_words", "pixels"), [("A4", "(A4)", (414, 585)), ("Letter", "(letter)", (425, 550))]
)
def test_the_results_pdf_has_every_entry_accents_and_cjk_and_renders_on_the_paper_chosen(
    venue: tuple[Store, ResultsOut], tmp_path: Path, paper: Paper, size_words: str, pixels: tuple[int, int]
) -> None:
    _, results = venue
    path = tmp_path / "results.pdf"

    results_pdf(results, path, paper=paper, fonts=find_fonts())

    info = pdfinfo(path)
    assert info["Page size"].endswith(size_words), info["Page size"]
    assert info["Pages"] == "2"  # one page per group: Solo Teen, Duet Teen
    text = pdftotext(path)
    words = " ".join(text.split())
    for entry_id, title in TITLES.items():
        assert title in text, f"{title!r} missing"
        assert entry_id in words.split()
    for accented in ("Gala d'Été 2026", "Studio Ñandú", "さくら Dance", "Kraków Ballet", "Ørsted Dans"):
        assert accented in text
    # The group, the sessions and their state, the time, the rule in words.
    assert "category Solo, division Teen" in text and "category Duet, division Teen" in text
    assert "Session S1 (Samedi matin): locked; signed off by 3 of 3 panel judges (J1, J2, J3)" in words
    assert "Session S2 (Dimanche): not locked; signed off by 0 of 3 panel judges" in words
    assert "Results as of 2026-06-20T12:00:00Z" in text
    solo = next(g for g in results.groups if g.fields.get("category") == "Solo")
    assert f"Rule: {solo.rule}" in words
    assert "score: mean of judges' totals, 1 highest and 1 lowest dropped, 2 decimals" in solo.rule
    # Per row: rank, entry, title, studio, score, award and FINAL or PROVISIONAL, as computed.
    rows = rows_of(pdftotext(path, layout=True))
    assert sorted(rows) == sorted(TITLES)
    wire = {row.entry_id: row for group in results.groups for row in group.rows}
    for entry_id, line in rows.items():
        row = wire[entry_id]
        cells = line.split()
        assert cells[0] == ("—" if row.rank is None else str(row.rank)), line
        assert (row.score or "—") in cells and (row.award or "—") in cells, line
        assert cells[-1] == ("FINAL" if row.final else "PROVISIONAL"), line
    assert [wire[e].final for e in ("101", "102", "103", "201")] == [True, True, True, False]
    assert wire["201"].rank is None and wire["201"].score is not None  # J3 missing: unranked
    # Solo Teen holds Sunday's provisional entry: its page says so in a banner; Duet's is all final.
    pages = text.split("\f")
    solo_page = next(page for page in pages if "category Solo" in page)
    duet_page = next(page for page in pages if "category Duet" in page)
    assert "PROVISIONAL — 1 of 3 results not final" in " ".join(solo_page.split())
    assert "PROVISIONAL —" not in duet_page
    # The page renders: paper-sized at 50 dpi, with ink on it but mostly paper.
    size, dark = dark_share(path)
    assert size == pixels
    assert 0.005 < dark < 0.5, dark


def test_the_judges_sheets_show_each_judges_values_and_total_with_the_dropped_marked(
    venue: tuple[Store, ResultsOut], tmp_path: Path
) -> None:
    store, results = venue
    path = tmp_path / "judges.pdf"

    judges_sheets_pdf(results, store.query(judges_values), path, paper="Letter", fonts=find_fonts())

    text = pdftotext(path, layout=True)
    assert "(letter)" in pdfinfo(path)["Page size"]
    flat = " ".join(text.split())
    for entry_id, title in TITLES.items():
        assert f"{entry_id} {title}" in flat
    assert "Technique (×2)" in text and "Falls (deduction)" in text and "Artistry" in text
    lines = text.splitlines()
    wire = {row.entry_id: row for group in results.groups for row in group.rows}

    def judge_line(entry_id: str, judge: str) -> list[str]:
        start = next(i for i, line in enumerate(lines) if line.split()[:1] == [entry_id])
        return next(line.split() for line in lines[start:] if line.split()[:1] == [judge])

    # 101: totals 2 x 9.5 + 9 = 28, 2 x 9.8 + 9.6 = 29.2, 2 x 8.9 + 9.1 - 0.5 = 26.4: J2 and J3
    # dropped, the score J1's 28.00.
    assert wire["101"].dropped == ["J2", "J3"] and wire["101"].score == "28.00"
    assert judge_line("101", "J1") == ["J1", "9.5", "9.0", "0.0", "28"]
    assert judge_line("101", "J2") == ["J2", "9.8", "9.6", "0.0", "29.2", "DROPPED"]
    assert judge_line("101", "J3") == ["J3", "8.9", "9.1", "0.5", "26.4", "DROPPED"]
    # 201: J3 has not scored it; it is provisional and unranked.
    assert judge_line("201", "J3") == ["J3", "—", "not", "scored"]
    assert "201 Żółć Tango Ørsted Dans · session Dimanche · score" in flat
    assert "unranked · PROVISIONAL" in flat
    assert "provisional: 2 of 3 panel judges scored (J3 missing)" in flat
    assert flat.count("DROPPED") == sum(len(row.dropped) for row in wire.values())
    size, dark = dark_share(path)
    assert size == (425, 550) and 0.005 < dark < 0.5


def pdffonts(path: Path) -> list[list[str]]:
    """The fonts a PDF uses (pdffonts' table), one row of words per font."""
    out = subprocess.run(["pdffonts", str(path)], capture_output=True, check=True, timeout=60).stdout
    return [line.split() for line in out.decode().splitlines()[2:]]


def test_the_sample_events_results_print_with_their_emoji(tmp_path: Path) -> None:
    """The sample event (`python3 dev.py demo`, the tests' box) has "Shine ✨" and "Fire 🔥 Within":
    Symbola (Debian's fonts-symbola) carries them, so its results print rather than refuse."""
    config = make_box(tmp_path / "box")  # the real sample package, through the real import
    with Store(config.db_path) as store:
        devices = {judge: paired_device(store, judge) for judge in ("J1", "J2", "J3")}  # SAT-AM's panel
        for judge, device in devices.items():
            for entry_id in ("101", "107", "108"):
                values = {"technique": 9.0, "performance": 8.6, "choreography": 8.0 + 0.5 * int(judge[1])}
                sheet = SheetSubmission(str(uuid.uuid4()), entry_id, values, "2026-03-14T10:00:00-04:00")
                [receipt] = store.write_sync(partial(submit_sheets, items=[(device, sheet)]))
                assert isinstance(receipt, SheetReceipt) and receipt.status == 201, receipt
            store.write_sync(partial(sign_off, device=device, session_id="SAT-AM"))
        store.write_sync(lambda c: lock(c, "SAT-AM", "awards at noon"))
        results = store.query(lambda c: results_out(c, generated_at="2026-03-14T12:00:00Z"))
    path = tmp_path / "results.pdf"

    results_pdf(results, path, fonts=find_fonts())

    assert "Symbola_hint.ttf" in [p.name for p in find_fonts().fallbacks]
    text = pdftotext(path)
    assert "Shine ✨" in text and "Fire 🔥 Within" in text  # pdftotext reads the emoji back as typed
    layout = pdftotext(path, layout=True)
    for entry_id, title in (("107", "Shine ✨"), ("108", "Fire 🔥 Within"), ("101", "La Vie en Rose")):
        [line] = [line for line in layout.splitlines() if line.split()[1:2] == [entry_id]]
        assert title in line and line.split()[-1] == "FINAL", line
    # Symbola is embedded (a subset, with its Unicode map): the emoji are drawn, not blank boxes.
    [symbola] = [row for row in pdffonts(path) if row[0].endswith("+Symbola")]
    assert symbola[-5:-2] == ["yes", "yes", "yes"], symbola  # emb sub uni
    page = next(i for i, words in enumerate(text.split("\f"), start=1) if "Shine ✨" in words)
    size, dark = dark_share(path, page)
    assert size == (414, 585) and 0.005 < dark < 0.5, dark


def test_a_character_no_font_carries_stops_the_print_naming_the_packages(
    venue: tuple[Store, ResultsOut], tmp_path: Path
) -> None:
    _, results = venue
    (out := tmp_path / "print").mkdir()
    path = out / "results.pdf"
    fonts = find_fonts()
    latin_only = PrintFonts(fonts.regular, fonts.bold)  # DejaVu Sans alone: no CJK

    with pytest.raises(FontsMissing) as caught:
        results_pdf(results, path, fonts=latin_only)

    assert "東 (U+6771)" in caught.value.detail and FONT_PACKAGES in caught.value.detail
    assert "results_fonts" in caught.value.detail
    assert list(out.iterdir()) == []  # nothing written, not even half

    # A script none of the system's fonts carries (Linear B) is refused the same way.
    odd = results.groups[0].rows[0]
    odd.title = "𐀀𐀁"
    with pytest.raises(FontsMissing, match=r"𐀀 \(U\+10000\) 𐀁 \(U\+10001\)"):
        results_pdf(results, path, fonts=fonts)
    assert not path.exists()


def test_fonts_come_from_the_setting_or_the_system_and_missing_ones_name_the_packages(tmp_path: Path) -> None:
    found = find_fonts()
    assert found.regular.name == "DejaVuSans.ttf" and found.bold.name == "DejaVuSans-Bold.ttf"
    assert [p.name for p in found.fallbacks] == ["DroidSansFallbackFull.ttf", "Symbola_hint.ttf"]

    # The setting wins: its first file for the text (its -Bold sibling for headings), the rest fallbacks.
    chosen = find_fonts([str(found.regular), str(found.fallbacks[0])])
    assert chosen == PrintFonts(found.regular, found.bold, (found.fallbacks[0],))
    fallback_only = find_fonts([str(found.fallbacks[0])])
    assert fallback_only.bold == fallback_only.regular == found.fallbacks[0]

    missing = tmp_path / "NoSuchFont.ttf"
    with pytest.raises(FontsMissing) as caught:
        find_fonts([str(missing)])
    assert str(missing) in caught.value.detail and FONT_PACKAGES in caught.value.detail
    (tmp_path / "notes.txt").write_text("not a font")
    with pytest.raises(FontsMissing, match=r"not a \.ttf, \.otf or \.ttc"):
        find_fonts([str(tmp_path / "notes.txt")])


def test_the_paper_setting_takes_a4_or_letter_only(tmp_path: Path) -> None:
    def read(paper: str) -> str:
        return load_config(tmp_path, environ={"VENUEBOX_RESULTS_PAPER": paper}).results_paper

    assert load_config(tmp_path, environ={}).results_paper == "A4"
    assert read("Letter") == "Letter"
    with pytest.raises(ConfigError, match='results_paper must be "A4" or "Letter"'):
        read("Legal")


def test_venuebox_results_prints_a_pdf_on_the_paper_set_and_says_in_one_line_when_fonts_are_missing(
    tmp_path: Path,
) -> None:
    config, store, _ = box_with_results(tmp_path)
    store.close()
    path = tmp_path / "results.pdf"

    done = venuebox(
        config, "results", "--format", "pdf", "--to", str(path), env={"VENUEBOX_RESULTS_PAPER": "Letter"}
    )

    assert done.returncode == 0, done.stderr
    assert "(letter)" in pdfinfo(path)["Page size"]
    text = pdftotext(path)
    assert all(title in text for title in TITLES.values())

    missing = tmp_path / "fonts" / "Gone.ttf"
    again = tmp_path / "again.pdf"
    refused = venuebox(
        config, "results", "--format", "pdf", "--to", str(again), env={"VENUEBOX_RESULTS_FONTS": str(missing)}
    )
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert str(missing) in line and FONT_PACKAGES in line
    assert not again.exists()
