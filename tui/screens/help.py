"""The help screen: every key, and what each screen is for."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown


def help_text(presence_online_s: int | None) -> str:
    """The help, with the box's ``presence_online_s`` setting (None: the box has not said it yet)."""
    online = (
        "a recent heartbeat" if presence_online_s is None else f"heartbeat in the last {presence_online_s} s"
    )
    return f"""\
# venuebox console

The console shows the box's state; it never changes scores. It talks to the running daemon only.

| Key | Does |
| --- | --- |
| `1` … `8` | Overview, Tablets, Scores, Pairing, Alerts, Audit, Results, Schedule |
| `f` (or `F2`) | **Freeze** scoring (asks why, then to confirm); when frozen, **unfreeze** (confirms) |
| `u` | **Sync uplink**: the box tries to send its backlog to the cloud now (ends a backoff or a pause) |
| `e` | **Export to USB**: choose a key the box sees (or type a folder); the box writes and checks it |
| `ctrl+p` | Command palette: every action by name |
| `?` / `F1` | This help (Escape closes) |
| `q` | Quit the console (the box keeps running) |
| Tab / arrows | Move between fields and rows; Enter opens or chooses |

**Tablets**: `s` sorts by the next column, `S` reverses, `r` revokes the selected tablet (confirms).
**Scores**: `[` and `]` change session, Enter on an entry shows all its sheets; ✓ scored, ✎ corrected,
· missing.
**Pairing**: choose a judge and press Enter for a one-time code; the judge types it or scans the QR code.
**Alerts**: `a` acknowledges the selected alert, `c` shows or hides cleared ones.
**Audit**: `/` filters, `v` verifies the hash chains of the ledger and the audit log.
**Results**: ranks, scores and awards per group; `[` and `]` show one session, Enter explains an entry,
`l` locks the session (asks why; on a locked one, unlocks). A result is FINAL only when its session is
locked and every panel judge signed off; every other one is PROVISIONAL.
**Schedule**: the published versions (who, when, why, what each changed; the newest is what tablets
have) and the draft of day-of changes with what validate finds (errors refuse a publish, warnings are
said). `p` publishes the draft as the next version (asks why), `d` discards it (confirms). Changes are
typed with `venuebox schedule ...` on the box's shell.

**Uplink** (Overview): the state (paused or circuit open in red, backing off in yellow), the last
success, what waits and for how long; when it is in trouble, the next try and the last error.
`venuebox uplink status` on the box's shell shows it all.

**Backup** (Overview): the box's last encrypted snapshot: how old (yellow when they have stopped), ✓
verified, not verified yet, or **DOES NOT VERIFY** (make a USB export now), and how many are kept.
"only this box can open them": add an organiser's key with `venuebox backup configure`.

**Export to USB** (`e`): the scores as spreadsheets, the ledger, the audit log and the encrypted
database, signed. The export runs in the box: Escape closes the window and the export carries on
(`e` shows it again). Keep the key safe; `venuebox export verify PATH` checks it anywhere.

Presence: ● online ({online}), ◐ stale, ○ offline, × revoked.
When the banner says **DAEMON UNREACHABLE**, the figures are from before; the console reconnects by
itself. `venuebox freeze --reason "..."` on the box's shell works even without the daemon.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,question_mark,f1", "close", "Close")]

    def __init__(self, presence_online_s: int | None) -> None:
        super().__init__()
        self.presence_online_s = presence_online_s

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog -wide", id="help-dialog"):
            yield Markdown(help_text(self.presence_online_s))

    def action_close(self) -> None:
        self.dismiss(None)
