"""Modal dialogs: the freeze reason, a reason for a recorded action (lock, publish), a yes/no
confirmation, one entry's sheets."""

from __future__ import annotations

from typing import ClassVar
from zoneinfo import ZoneInfo

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from appliance.shared.admin_wire import EntryChains, PersonalOut
from appliance.shared.status import FREEZE_CATEGORIES, FREEZE_REASON_MAX_CHARS, FreezeCategory
from tui import format as fmt

CATEGORY_LABELS: dict[FreezeCategory, str] = {
    "dispute": "Dispute (a result or entry is contested)",
    "anomaly": "Anomaly (scores look wrong)",
    "tabulation": "Tabulation (results are being compiled)",
    "technical": "Technical (tablets, network, power)",
    "other": "Other",
}


CHOOSE_KIND = "Choose what kind of freeze this is (arrow keys, then Enter)."
WRITE_REASON = "Write the reason: judges see it on their tablets."


class ReasonDialog(ModalScreen[str | None]):
    """An action that is audited and uplinked (a session lock, a schedule publish): what it does, and
    why in words, which it requires. Answers the reason, or None when cancelled. ``name`` prefixes the
    widgets' ids (``#NAME-reason``, ``#NAME-problem``, ``#NAME-detail``, ...)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self, name: str, title: str, detail: Text | str, verb: str, placeholder: str, *, max_chars: int
    ) -> None:
        super().__init__()
        self.prefix = name
        self.title_words = title
        self.detail = detail
        self.verb = verb
        self.placeholder = placeholder
        self.max_chars = max_chars

    def compose(self) -> ComposeResult:
        name = self.prefix
        with Vertical(id=f"{name}-dialog", classes="dialog -danger"):
            yield Label(self.title_words, classes="dialog-title")
            with VerticalScroll(id=f"{name}-detail-box", classes="reason-detail-box"):
                yield Static(self.detail, id=f"{name}-detail", classes="reason-detail")
            yield Input(placeholder=self.placeholder, max_length=self.max_chars, id=f"{name}-reason")
            yield Static("", id=f"{name}-problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button(self.verb, variant="error", id=f"{name}-go")
                yield Button("Cancel", id=f"{name}-cancel")

    def on_mount(self) -> None:
        self.query_one(f"#{self.prefix}-reason", Input).focus()

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == f"{self.prefix}-go":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        reason = self.query_one(f"#{self.prefix}-reason", Input).value.strip()
        if not reason:
            self.query_one(f"#{self.prefix}-problem", Static).update(
                "Write the reason: it goes in the audit log and to the cloud."
            )
            self.query_one(f"#{self.prefix}-reason", Input).focus()
            return
        self.dismiss(reason)


class FreezeDialog(ModalScreen[tuple[FreezeCategory, str] | None]):
    """Why freeze? A category and a reason in words (judges see the words) are both required."""

    AUTO_FOCUS = "#freeze-category"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def compose(self) -> ComposeResult:
        with Vertical(id="freeze-dialog", classes="dialog -danger"):
            yield Label("Freeze scoring: why?", classes="dialog-title")
            with RadioSet(id="freeze-category"):
                for category in FREEZE_CATEGORIES:
                    yield RadioButton(CATEGORY_LABELS[category], name=category)
            # Not selected when the focus comes back to it (after the dialog asked for a kind):
            # typed on, the words already there would all be replaced.
            yield Input(
                placeholder="Reason in a few words (shown on judges' tablets)",
                max_length=FREEZE_REASON_MAX_CHARS,
                select_on_focus=False,
                id="freeze-reason",
            )
            yield Static("", id="freeze-problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Continue", variant="error", id="freeze-continue")
                yield Button("Cancel", id="freeze-cancel")

    def on_radio_set_changed(self, _: RadioSet.Changed) -> None:
        # A kind is chosen: a request to choose one is answered (one to write the reason stays).
        problem = self.query_one("#freeze-problem", Static)
        if str(problem.content) == CHOOSE_KIND:
            problem.update("")
        reason = self.query_one("#freeze-reason", Input)
        reason.focus()
        reason.cursor_position = len(reason.value)  # typing goes on after what is there

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self._submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "freeze-continue":
            self._submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _submit(self) -> None:
        pressed = self.query_one(RadioSet).pressed_button
        reason = self.query_one("#freeze-reason", Input).value.strip()
        problem = self.query_one("#freeze-problem", Static)
        if pressed is None:
            problem.update(CHOOSE_KIND)
            self.query_one(RadioSet).focus()
            return
        if not reason:
            problem.update(WRITE_REASON)
            self.query_one("#freeze-reason", Input).focus()
            return
        category = next(c for c in FREEZE_CATEGORIES if c == pressed.name)
        self.dismiss((category, reason))


class ConfirmScreen(ModalScreen[bool]):
    """An explicit yes: y / Enter on the button confirms, n / Escape cancels."""

    AUTO_FOCUS = "#no"  # Enter alone must never confirm

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str, confirm_label: str = "Yes", danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.confirm_label = confirm_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog" + (" -danger" if self.danger else ""), id="confirm-dialog"):
            yield Label(self.question, classes="dialog-title")
            yield Static(self.detail, id="confirm-detail")
            with Horizontal(classes="buttons"):
                yield Button(
                    f"{self.confirm_label} (y)", variant="error" if self.danger else "primary", id="yes"
                )
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class EntryScreen(ModalScreen[None]):
    """Every sheet of one entry, judge by judge, from the original to the current one, and the
    entry's participants (and other personal fields) masked as the box sends them."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q,enter", "close", "Close")]

    def __init__(self, detail: EntryChains, tz_name: str | None, personal: PersonalOut | None = None) -> None:
        super().__init__()
        self.detail = detail
        self.tz = fmt.zone(tz_name)
        self.personal = personal

    def compose(self) -> ComposeResult:
        entry = self.detail.entry
        with Vertical(classes="dialog -wide", id="entry-dialog"):
            yield Label(f"#{entry.order} {entry.title} (entry {entry.entry_id})", classes="dialog-title")
            yield Static(
                " · ".join(k for k in (entry.category, entry.division, entry.level, entry.studio) if k)
            )
            if self.personal:
                yield Static(personal_line(self.personal), id="entry-personal")
            with VerticalScroll():
                yield Static(entry_table(self.detail, self.tz), id="entry-chains")
            yield Static("Escape closes.", classes="hint")

    def action_close(self) -> None:
        self.dismiss(None)


def personal_line(personal: PersonalOut) -> str:
    """'Participants: N. R., M. F. · guardian_phone: 4•••': the masked fields as the admin API
    sends them (GET /admin/v1/entries/ID/personal); '—' for a field the entry has no value for."""
    parts = []
    for field, value in personal.fields.items():
        label = "Participants" if field == "participants" else field
        shown = ", ".join(value) if isinstance(value, list) else value
        parts.append(f"{label}: {shown or '—'}")
    return " · ".join(parts)


def entry_table(detail: EntryChains, tz: ZoneInfo | None) -> Table:
    table = Table(expand=True, show_edge=False, pad_edge=False)
    for column in ("Judge", "Sheet", "Values", "Total", "Received", "Note"):
        table.add_column(column, overflow="fold")
    for judge in detail.judges:
        if not judge.chain:
            table.add_row(judge.name, Text("missing", style="red"), "", "", "", "")
            continue
        for i, sheet in enumerate(judge.chain):
            values = ", ".join(f"{k} {fmt.number(v)}" for k, v in sheet.values.items())
            if sheet.current:
                note = Text("current" + (" (correction)" if sheet.supersedes else ""), style="bold")
            else:
                note = Text("superseded", style="dim")
            table.add_row(
                judge.name if i == 0 else "",
                sheet.sheet_id[:8],
                values,
                fmt.number(sheet.total),
                fmt.clock(sheet.received_at, tz),
                note,
            )
    return table
