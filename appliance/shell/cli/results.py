"""`venuebox results`: the current event's results as the engine computes them under the event's
scoring rules, read straight from the database (the daemon may be stopped), as a readable table
per group, results.csv's CSV, a PDF or JSON; to the terminal or, with `--to`, to a file."""

from __future__ import annotations

import io
import sys
import unicodedata
from pathlib import Path
from typing import Any

import click
import msgspec

from appliance.shared.errors import DomainError
from appliance.shared.results_wire import ResultRow, ResultsOut, SessionState
from appliance.shared.tablet_text import printable
from appliance.shell.cli.common import config_for, print_json, with_store

FORMATS = ("text", "csv", "pdf", "json")


@click.command("results")
@click.option("--session", "session", default=None, metavar="ID", help="Only this session's entries.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only the groups whose rank_within FIELD is VALUE (category=Solo); repeat for several fields.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--to",
    "to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write to this file (replaced whole, atomically) instead of the terminal; needed for pdf.",
)
@click.pass_context
def results(
    ctx: click.Context, session: str | None, groups: tuple[str, ...], fmt: str, to: Path | None
) -> None:
    """The results: rank, entry, score, award, PROVISIONAL or FINAL, per group with its rule in
    words. Ranks are always those of the whole event's groups, filtered or not. A result is FINAL
    only when its session is locked and every panel judge signed off."""
    from appliance.core import results_out, tabulation
    from appliance.shared.csv_dialects import csv_dialect

    if fmt == "pdf" and to is None:
        raise DomainError("a PDF goes to a file: add --to PATH (results.pdf)")
    wanted = results_out.parse_group(groups)
    config = config_for(ctx)
    dialect = csv_dialect(config.export_csv_dialect)

    def read(store: Any) -> tuple[ResultsOut, bytes | None]:
        def in_one_read(conn: Any) -> tuple[ResultsOut, bytes | None]:
            out = results_out.results_out(conn, session=session, group=wanted)
            if fmt != "csv":
                return out, None
            stream = io.BytesIO()
            judges = tabulation.judge_heads(conn, out.event_id)
            tabulation.write_csv(stream, *tabulation.results_rows(out, judges), dialect=dialect)
            return out, stream.getvalue()

        result: tuple[ResultsOut, bytes | None] = store.query(in_one_read)
        return result

    out, csv_bytes = with_store(config, read)
    if fmt == "pdf":
        assert to is not None
        _write_pdf(out, to, config.results_paper, config.results_fonts)
        click.echo(f"wrote {to}")
        return
    if fmt == "csv":
        assert csv_bytes is not None
        data = csv_bytes
    elif fmt == "json":
        if to is None:
            print_json(msgspec.to_builtins(out))
            return
        data = msgspec.json.format(msgspec.json.encode(out), indent=2) + b"\n"
    else:
        text = "\n".join(printable(line) for line in text_lines(out)) + "\n"
        if to is None:
            click.echo(text, nl=False)
            return
        data = text.encode("utf-8")
    if to is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from appliance.shared.secrets_files import atomic_write

    atomic_write(to, data, mode=0o644)
    click.echo(f"wrote {to}")


def _write_pdf(out: ResultsOut, to: Path, paper: str, fonts: list[str]) -> None:
    from appliance.core.print_results import find_fonts, results_pdf

    results_pdf(out, to, paper="Letter" if paper == "Letter" else "A4", fonts=find_fonts(fonts))


# -- the text table ---------------------------------------------------------------------------------


def text_lines(out: ResultsOut) -> list[str]:
    """``out`` as a readable table per group, headed by the event, the time and each session's state."""
    lines = [
        f"{out.event_name} ({out.event_id}): results at {out.generated_at}",
        "A result is FINAL only when its session is locked and every panel judge has signed off;",
        "every other result is PROVISIONAL and may still change.",
        "",
        "sessions:",
    ]
    lines.extend(f"  {_session_line(state)}" for state in out.sessions)
    panels = {state.session_id: len(state.panel) for state in out.sessions}
    if not out.groups:
        lines.extend(["", "no entries match"])
    for group in out.groups:
        where = ", ".join(
            f"{name} {value if value is not None else '(none)'}" for name, value in group.fields.items()
        )
        lines.extend(["", where or "all entries", f"  rule: {group.rule}"])
        table: list[tuple[str, ...]] = [("rank", "entry", "title", "studio", "score", "award", "status")]
        table.extend(_cells(row, panels.get(row.session_id, 0)) for row in group.rows)
        widths = [max(_width(r[i]) for r in table) for i in range(len(table[0]))]
        for cells in table:
            padded = [cell + " " * (width - _width(cell)) for cell, width in zip(cells, widths, strict=True)]
            lines.append(("  " + "  ".join(padded)).rstrip())
    return lines


def _session_line(state: SessionState) -> str:
    lock = f"LOCKED ({state.locked_reason})" if state.locked else "open"
    waiting = [judge for judge in state.panel if judge not in state.signed_off]
    signed = f"signed off {len(state.signed_off)} of {len(state.panel)}"
    if state.signed_off:
        signed += f": {', '.join(state.signed_off)}"
    if waiting:
        signed += f" (waiting for {', '.join(waiting)})"
    final = state.locked and bool(state.panel) and not waiting
    return f"{state.session_id}  {lock}; {signed}; {'FINAL' if final else 'provisional'}"


def _cells(row: ResultRow, panel: int) -> tuple[str, ...]:
    if row.final:
        status = "FINAL"
    elif row.complete:
        status = "PROVISIONAL"
    else:
        status = f"PROVISIONAL ({len(row.totals)} of {panel} judges scored)"
    rank = "-" if row.rank is None else str(row.rank) + ("=" if row.shared_with else "")
    return (rank, row.entry_id, row.title, row.studio or "", row.score or "-", row.award or "", status)


def _width(text: str) -> int:
    """Terminal columns: wide (CJK) characters take two, combining marks none."""
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text
    )


COMMANDS = [results]
