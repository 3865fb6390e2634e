"""Results everywhere a tech looks (issue 19, item 4) on real boxes: `venuebox results` as a tech
runs it (the daemon stopped: it reads the database), the admin API's `GET /admin/v1/results` over
HTTP against a running daemon, and the USB export's results.csv and results.pdf. Ranks are always
the event-wide group's; a result is FINAL only once its session is locked and every panel judge
signed off; bad input is one line (CLI) or a problem (HTTP), the stored data untouched."""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import json
import shutil
import sqlite3
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from appliance.core import export, sessions
from appliance.core.config import Config
from appliance.core.ledger import SheetReceipt, SheetSubmission, submit_sheets
from appliance.core.storage import Store
from tests.conftest import SAMPLE_EVENT, RunningBox, make_box, needs_tool, paired_device, venuebox

# The sample event: SAT-AM (101-120) is judged by J1 J2 J3, SAT-PM (121-140) by J1 J3 J4.
# Solo/Senior: 101 108 (SAT-AM), 125 130 132 135 (SAT-PM), 155 (SUN-AM).
EVENT_JSON = {
    "scoring": {
        "judges": "trimmed_mean",
        "drop_highest": 1,
        "drop_lowest": 1,
        "precision": 2,
        "ties": ["criterion:technique"],
        "awards": [{"label": "Platinum", "min": 27}, {"label": "Gold", "min": 25}],
    }
}
# A CJK title besides the sample's own accents and emoji ("Shine ✨", "Fire 🔥 Within": Symbola).
TITLES = {"125": "Über Blue 青い鳥"}


def values(technique: float, performance: float, choreography: float) -> dict[str, float]:
    return {"technique": technique, "performance": performance, "choreography": choreography}


def package(tmp_path: Path) -> Path:
    """The sample event with a scoring block (trimmed mean, a tie rule, two award bands) and a CJK
    title."""
    folder = tmp_path / "package"
    shutil.copytree(SAMPLE_EVENT, folder)
    event = json.loads((folder / "event.json").read_text(encoding="utf-8"))
    (folder / "event.json").write_text(json.dumps(event | EVENT_JSON, ensure_ascii=False), encoding="utf-8")
    path = folder / "entries.csv"
    with path.open(encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    for row in rows[1:]:
        row[4] = TITLES.get(row[0], row[4])
    with path.open("w", encoding="utf-8", newline="") as file:
        csv.writer(file).writerows(rows)
    return folder


def submit(store: Store, judge_id: str, entry_id: str, scores: dict[str, float]) -> None:
    device = paired_device(store, judge_id)
    sheet = SheetSubmission(str(uuid.uuid4()), entry_id, scores, "2026-03-14T10:42:07-04:00")
    [receipt] = store.write_sync(lambda c: submit_sheets(c, [(device, sheet)]))
    assert isinstance(receipt, SheetReceipt) and receipt.status == 201, receipt


def scored_box(tmp_path: Path, **settings: Any) -> Config:
    """SAT-AM's 101 complete (27, 27.1, 27.1: J2 or J3 and J1 dropped: 27.10, Platinum); 108 complete
    with 26, 27.1, 25 (mean of the middle one: 26.00, Gold); SAT-PM's 125 complete (27.1 from J1 J3
    J4: 27.10, Platinum) and 132 scored by J1 only (provisional, unranked)."""
    config = make_box(tmp_path / "box", package=package(tmp_path), **settings)
    with Store(config.db_path) as store:
        for judge in ("J1", "J2", "J3"):
            submit(store, judge, "101", values(9.4, 9.1, 8.5) if judge == "J1" else values(9.5, 9.1, 8.5))
        submit(store, "J1", "108", values(9.0, 8.5, 8.5))
        submit(store, "J2", "108", values(9.5, 9.1, 8.5))
        submit(store, "J3", "108", values(8.5, 8.0, 8.5))
        for judge in ("J1", "J3", "J4"):
            submit(store, judge, "125", values(9.5, 9.1, 8.5))
        submit(store, "J1", "132", values(9.9, 9.9, 9.5))
    return config


def digest(config: Config) -> str:
    """What the box stores, every table's rows (the file's bytes move with a WAL checkpoint)."""
    with contextlib.closing(sqlite3.connect(config.db_path)) as conn:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()


def group_rows(listing: dict[str, Any], **fields: str) -> list[dict[str, Any]]:
    [group] = [g for g in listing["groups"] if all(g["fields"].get(k) == v for k, v in fields.items())]
    return list(group["rows"])


# -- the CLI ------------------------------------------------------------------------------------------


def test_results_as_text_show_each_group_with_its_rule_ranks_awards_and_provisional_marks(
    tmp_path: Path,
) -> None:
    box = scored_box(tmp_path)

    done = venuebox(box, "results", "--group", "category=Solo", "--group", "division=Senior")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("GLOW Dance Toronto 2026 (glow-2026-toronto): results at ")
    assert any(line.startswith("  SAT-AM  open; signed off 0 of 3") for line in lines)
    start = lines.index("category Solo, division Senior")
    rule = lines[start + 1]
    assert rule.startswith(
        "  rule: score: mean of judges' totals, 1 highest and 1 lowest dropped, 2 decimals"
    )
    assert "ties: technique, else shared" in rule and "awards: Platinum from 27, Gold from 25" in rule
    table = [line.split() for line in lines[start + 2 : start + 6]]
    assert table[0] == ["rank", "entry", "title", "studio", "score", "award", "status"]
    # 101 and 125 tie on 27.10 and on technique (9.50 each): they share rank 1, 108 is third.
    assert table[1][:2] == ["1=", "101"] and table[1][-3:] == ["27.10", "Platinum", "PROVISIONAL"]
    assert table[2][:2] == ["1=", "125"] and table[2][-3:] == ["27.10", "Platinum", "PROVISIONAL"]
    assert table[3][:2] == ["3", "108"] and table[3][-3:] == ["26.00", "Gold", "PROVISIONAL"]
    partial = next(line for line in lines if " 132 " in line)
    assert partial.split()[0] == "-" and partial.endswith("PROVISIONAL (1 of 3 judges scored)")
    assert "29.30" in partial  # its partial score (one judge: nothing dropped), never ranked nor banded


def test_a_listing_filtered_to_one_session_keeps_the_event_wide_ranks(tmp_path: Path) -> None:
    box = scored_box(tmp_path)

    whole = json.loads(venuebox(box, "results", "--format", "json").stdout)
    one = venuebox(box, "results", "--session", "SAT-PM", "--format", "json")

    assert one.returncode == 0, one.stderr
    listing = json.loads(one.stdout)
    assert [s["session_id"] for s in listing["sessions"]] == ["SAT-PM"]
    assert {row["session_id"] for g in listing["groups"] for row in g["rows"]} == {"SAT-PM"}
    [entry_125] = [
        r for r in group_rows(listing, category="Solo", division="Senior") if r["entry_id"] == "125"
    ]
    [whole_125] = [r for r in group_rows(whole, category="Solo", division="Senior") if r["entry_id"] == "125"]
    # Alone in its session's listing, 125 still shares the rank 1 it has across the event (with 101).
    assert entry_125["rank"] == whole_125["rank"] == 1 and entry_125["shared_with"] == ["101"]
    assert entry_125 == whole_125


def test_a_locked_session_whose_panel_all_signed_off_is_final_and_the_others_stay_provisional(
    tmp_path: Path,
) -> None:
    box = scored_box(tmp_path)
    with Store(box.db_path) as store:
        for device in [paired_device(store, judge) for judge in ("J1", "J2", "J3")]:
            store.write_sync(functools.partial(sessions.sign_off, device=device, session_id="SAT-AM"))
        store.write_sync(lambda c: sessions.lock(c, "SAT-AM", "awards at 12:00"))

    listing = json.loads(venuebox(box, "results", "--format", "json").stdout)
    text = venuebox(box, "results", "--session", "SAT-AM").stdout

    by_entry = {r["entry_id"]: r for g in listing["groups"] for r in g["rows"]}
    assert by_entry["101"]["final"] and not by_entry["101"]["provisional"]
    assert by_entry["125"]["provisional"] and not by_entry["125"]["final"]  # SAT-PM is open
    assert "SAT-AM  LOCKED (awards at 12:00); signed off 3 of 3: J1, J2, J3; FINAL" in text
    assert "PROVISIONAL" not in text.split("sessions:")[1]


def test_results_csv_to_a_file_is_the_exports_results_csv_and_json_decodes(tmp_path: Path) -> None:
    box = scored_box(tmp_path)
    target = tmp_path / "out" / "results.csv"

    done = venuebox(box, "results", "--format", "csv", "--to", str(target))

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {target}"
    data = target.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfsession_id,session_name,running_order,entry_id,")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert len(rows) == 60
    row = next(r for r in rows if r["entry_id"] == "108")
    assert (row["score"], row["rank"], row["award"], row["dropped"]) == ("26", "3", "Gold", "J2;J3")
    assert (row["complete"], row["provisional"], row["final"]) == ("yes", "yes", "no")
    usb = tmp_path / "usb"
    usb.mkdir()
    assert (export.export_to(box, usb).path / "results.csv").read_bytes() == data


@needs_tool(shutil.which("pdftotext") is not None, "pdftotext (Debian's poppler-utils) is not installed")
def test_results_as_pdf_go_to_a_file_with_every_entry_and_its_provisional_mark(tmp_path: Path) -> None:
    box = scored_box(tmp_path)
    target = tmp_path / "results.pdf"

    assert venuebox(box, "results", "--format", "pdf").returncode == 1  # a PDF needs --to
    done = venuebox(box, "results", "--session", "SAT-PM", "--format", "pdf", "--to", str(target))

    assert done.returncode == 0, done.stderr
    text = subprocess.run(["pdftotext", "-layout", str(target), "-"], capture_output=True, text=True).stdout
    assert "Über Blue 青い鳥" in text and "PROVISIONAL" in text
    assert "La Vie en Rose" not in text  # SAT-AM's entries are not in SAT-PM's listing


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--session", "NOPE"], "no session 'NOPE' in this event (sessions: SAT-AM, SAT-PM, SUN-AM)"),
        (["--group", "style=Jazz"], "results are grouped by category, division; not by style"),
        (["--group", "Solo"], "a group is FIELD=VALUE (category=Solo), not 'Solo'"),
        (["--format", "pdf"], "a PDF goes to a file: add --to PATH (results.pdf)"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit_and_changes_nothing(
    tmp_path: Path, args: list[str], says: str
) -> None:
    box = make_box(tmp_path / "box")
    before = digest(box)

    done = venuebox(box, "results", *args)

    assert done.returncode == 1
    assert done.stderr == f"venuebox: error: {says}\n" and done.stdout == ""
    assert digest(box) == before


def test_results_with_no_event_say_so_in_one_line(tmp_path: Path) -> None:
    box = make_box(tmp_path / "box", package=None)

    done = venuebox(box, "results")

    assert done.returncode == 1
    assert done.stderr == (
        "venuebox: error: no event imported on this box: import one with `venuebox event import PATH`\n"
    )


# -- the admin API --------------------------------------------------------------------------------------


def test_the_admin_api_answers_results_filtered_like_the_cli_and_problems_for_bad_input(
    tmp_path: Path,
) -> None:
    box = RunningBox(scored_box(tmp_path)).start()
    try:
        with box.admin() as admin:
            whole = admin.get("/admin/v1/results")
            one = admin.get("/admin/v1/results", params={"session": "SAT-PM"})
            solo = admin.get(
                "/admin/v1/results", params=[("group", "category=Solo"), ("group", "division=Senior")]
            )
            unknown = admin.get("/admin/v1/results", params={"session": "NOPE"})
            bad_group = admin.get("/admin/v1/results", params={"group": "style=Jazz"})
            no_token = admin.get("/admin/v1/results", headers={"Authorization": "Bearer wrong"})
    finally:
        box.stop()

    assert whole.status_code == 200 and whole.headers["content-type"].startswith("application/json")
    cli = json.loads(venuebox(box.config, "results", "--format", "json").stdout)
    assert whole.json()["groups"] == cli["groups"] and whole.json()["sessions"] == cli["sessions"]
    assert whole.json()["rules"]["judges"] == "trimmed_mean"
    assert one.status_code == 200 and {r["session_id"] for g in one.json()["groups"] for r in g["rows"]} == {
        "SAT-PM"
    }
    assert [g["fields"] for g in solo.json()["groups"]] == [{"category": "Solo", "division": "Senior"}]
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert "no session 'NOPE'" in unknown.json()["detail"]
    assert bad_group.status_code == 422 and bad_group.json()["type"].endswith("/problems/invalid-input")
    assert no_token.status_code == 401


def test_the_admin_api_says_no_event_as_a_problem(tmp_path: Path) -> None:
    box = RunningBox(make_box(tmp_path / "box", package=None)).start()
    try:
        with box.admin() as admin:
            answer = admin.get("/admin/v1/results")
    finally:
        box.stop()
    assert answer.status_code == 503 and answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/problems/no-event")


# -- the USB export -------------------------------------------------------------------------------------


@needs_tool(shutil.which("pdftotext") is not None, "pdftotext (Debian's poppler-utils) is not installed")
def test_the_export_holds_results_pdf_listed_in_its_signed_manifest(tmp_path: Path) -> None:
    box = scored_box(tmp_path)
    usb = tmp_path / "usb"
    usb.mkdir()

    done = export.export_to(box, usb)

    assert export.verify_export(done.path).ok
    manifest = json.loads((done.path / "MANIFEST.json").read_text())["manifest"]
    assert "results.pdf" in {f["path"] for f in manifest["files"]} and "absent" not in manifest
    assert done.results_print == "printed results: results.pdf"
    text = subprocess.run(
        ["pdftotext", str(done.path / "results.pdf"), "-"], capture_output=True, text=True
    ).stdout
    titles = ("La Vie en Rose", "Shine ✨", "Fire 🔥 Within", "Über Blue 青い鳥")
    assert all(title in text for title in titles), text
    assert "results.pdf   the same results, printable" in (done.path / "README.txt").read_text()


def test_without_the_fonts_the_export_succeeds_and_says_why_results_pdf_is_absent(tmp_path: Path) -> None:
    box = scored_box(tmp_path, results_fonts=["/nonexistent/NoSuchFont.ttf"])
    usb = tmp_path / "usb"
    usb.mkdir()

    done = export.export_to(box, usb)

    assert export.verify_export(done.path).ok
    assert not (done.path / "results.pdf").exists()
    manifest = json.loads((done.path / "MANIFEST.json").read_text())["manifest"]
    reason = manifest["absent"]["results.pdf"]
    assert reason.startswith("results_fonts: /nonexistent/NoSuchFont.ttf is not a font file on this box")
    assert done.results_print == f"no results.pdf in this export: {reason}"
    readme = " ".join((done.path / "README.txt").read_text().split())
    assert f"No results.pdf: {reason}. Print results.csv instead." in readme
    assert (done.path / "results.csv").exists()
