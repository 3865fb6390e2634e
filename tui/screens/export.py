"""Export to USB: choose a key the box sees (or type a folder), start the export, follow it.

The export runs in the daemon (``POST /admin/v1/export``), never in the console: closing this window,
or the whole console, leaves it running, and opening the window again shows where it is. The window
only asks and polls, through the App's one AdminClient.
"""

from __future__ import annotations

from typing import ClassVar, Literal, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, ProgressBar, Static
from textual.widgets.option_list import Option

from appliance.shared.admin_wire import ExportJobView, UsbKey
from tui import format as fmt
from tui.client import AdminError, Unreachable
from tui.state import ConsoleHost

POLL_S = 0.3  # the bar moves smoothly; a GET that reads /proc/mounts costs the box nothing
# Where the window is: loading (the first answer), pick (choose a target), running, done.
Phase = Literal["loading", "pick", "running", "done"]


def target_prompt(target: UsbKey) -> Text:
    """One USB key as the list shows it: where it is mounted, its free space, the device."""
    return Text.assemble(
        (target.path, "bold"),
        f"  {fmt.megabytes(target.free_mb)} free",
        (f"  {target.device} {target.filesystem}", "dim"),
    )


def done_text(path: str) -> Text:
    return Text.assemble(
        ("Done: ", "bold green"),
        path,
        "\nKeep the key safe: it holds the scores and the encrypted database.",
        "\nTo check it later: ",
        (f"venuebox export verify {path}", "bold"),
    )


class ExportDialog(ModalScreen[Phase]):
    """Pick a target, start, follow. Dismissed with the phase it was in: "running" means the export
    was still going when the tech closed the window (the App then tells them when it ends)."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "close", "Close")]

    def __init__(self) -> None:
        super().__init__()
        self.phase: Phase = "loading"
        self.targets: list[UsbKey] = []
        self._polling = False
        self._starting = False
        self._link_problem = False  # the problem line says the daemon cannot be reached

    def compose(self) -> ComposeResult:
        with Vertical(id="export-dialog", classes="dialog"):
            yield Label("Export to USB", classes="dialog-title")
            with Vertical(id="export-pick"):
                yield Static("Looking for USB keys…", id="export-keys")
                yield OptionList(id="export-targets")
                yield Input(placeholder="…or type a folder on the box, e.g. /media/usb", id="export-to")
                yield Static("", id="export-last", classes="hint")
            with Vertical(id="export-follow"):
                yield Static("", id="export-target")
                yield ProgressBar(total=100, show_eta=False, id="export-bar")
                yield Static("", id="export-step")
                yield Static(
                    "Escape closes this window: the export carries on in the box (e shows it again).",
                    id="export-carries-on",
                    classes="hint",
                )
                yield Static("", id="export-done")
            yield Static("", id="export-problem", classes="problem")
            with Horizontal(classes="buttons"):
                yield Button("Export (Enter)", variant="primary", id="export-start")
                yield Button("Close (Esc)", id="export-close")

    def on_mount(self) -> None:
        self._show("loading")
        self.run_worker(self.poll(), group="export-poll")
        self.set_interval(POLL_S, self.poll)

    # Asking the box -----------------------------------------------------------------------------
    async def poll(self) -> None:
        """Fetch the export's state and the keys once; a poll still running is not stacked on."""
        if self._polling or self._starting or self.phase == "done":
            return
        self._polling = True
        try:
            answer = await cast(ConsoleHost, self.app).client.export_status()
        except (Unreachable, AdminError) as exc:
            self._say(Text(f"Cannot ask the box ({exc}); trying again."), link=True)
            if self.phase == "loading":
                self._offer([], None, focus=True)
            return
        finally:
            self._polling = False
        if self._link_problem:
            self._say(Text(""))
        job, targets = answer.job, answer.targets
        if self.phase == "running" and job.state == "failed":
            # Back to the choice: another key (or folder) is the usual way out.
            self._say(Text.assemble(("Export failed: ", "bold"), job.error or "no reason given"))
            self._offer(targets, None, focus=True)
        elif self.phase == "running" and job.state == "idle":
            self._say(Text("The box restarted during the export, so it did not finish: export again."))
            self._offer(targets, None, focus=True)
        elif job.state == "running" or self.phase == "running":
            self._follow(job)
        else:
            self._offer(targets, job, focus=self.phase == "loading")

    async def start(self, to: str) -> None:
        if self._starting or self.phase != "pick":
            return
        self._starting = True
        self._say(Text(f"Asking the box to export to {to}…"))
        try:
            answer = await cast(ConsoleHost, self.app).client.export_start(to)
        except AdminError as exc:
            # Refused (no such folder, too small) or another export runs (then the next poll shows
            # its progress): the tech reads why here, and the window stays open.
            self._say(Text.assemble((exc.title, "bold"), "\n", exc.detail))
            return
        except Unreachable as exc:
            self._say(Text(f"Not started: {exc}"), link=True)
            return
        finally:
            self._starting = False
        self._say(Text(""))
        self._follow(answer.job)

    # Showing ------------------------------------------------------------------------------------
    def _show(self, phase: Phase) -> None:
        self.phase = phase
        self.query_one("#export-pick").display = phase in ("loading", "pick")
        self.query_one("#export-follow").display = phase in ("running", "done")
        self.query_one("#export-start").display = phase == "pick"

    def _say(self, text: Text, link: bool = False) -> None:
        self._link_problem = link
        self._put("#export-problem", text)

    def _put(self, selector: str, content: Text | str) -> None:
        """Show ``content`` in a line of the window; an empty line takes no room."""
        line = self.query_one(selector, Static)
        line.update(content)
        line.display = bool(str(content))

    def _offer(self, targets: list[UsbKey], job: ExportJobView | None, focus: bool = False) -> None:
        """The choice of target: the keys the box sees (kept in step as keys come and go), a folder.
        ``job`` is the last export, when the window opens on it."""
        self._show("pick")
        if focus and job is not None and job.state == "failed":
            self._say(Text(f"The last export failed: {job.error}"))
        keys = self.query_one("#export-targets", OptionList)
        if [(t.path, t.free_mb) for t in targets] != [(t.path, t.free_mb) for t in self.targets]:
            chosen = keys.highlighted_option.id if keys.highlighted_option else None
            keys.set_options(Option(target_prompt(t), id=t.path) for t in targets)
            paths = [t.path for t in targets]
            keys.highlighted = paths.index(chosen) if chosen in paths else 0 if paths else None
        self.targets = targets
        keys.display = bool(targets)
        if targets:
            which = "The USB key the box sees" if len(targets) == 1 else "Choose a USB key"
            label = f"{which} (Enter exports to it):"
        else:
            label = "No USB key found: plug one in (it shows here when mounted), or type a folder below."
        self._put("#export-keys", label)
        last = ""
        if job is not None and job.state == "done":
            last = f"Last export: {job.path}"
        self._put("#export-last", last)
        if focus:
            self.set_focus(keys if targets else self.query_one("#export-to", Input))

    def _follow(self, job: ExportJobView) -> None:
        """The export under way: the target, the bar, the step; at the end where it is, or why not."""
        state = job.state
        self._show("done" if state == "done" else "running")
        doing = "Exported to " if state == "done" else "Exporting to "
        self._put("#export-target", Text.assemble(doing, (str(job.target), "bold")))
        self.query_one("#export-bar", ProgressBar).update(progress=round(100 * job.fraction, 1))
        self.query_one("#export-carries-on").display = state != "done"
        if state == "done":
            self._put("#export-step", "")
            self._put("#export-done", done_text(str(job.path)))
        else:
            self._put("#export-step", f"{job.step or 'starting'}…")
            self._put("#export-done", "")
        self.query_one("#export-close", Button).focus()  # Enter or Escape: the window goes

    # The tech -----------------------------------------------------------------------------------
    def _chosen(self) -> str | None:
        typed = self.query_one("#export-to", Input).value.strip()
        if typed:
            return typed
        option = self.query_one("#export-targets", OptionList).highlighted_option
        return option.id if option is not None and self.targets else None

    def _start_chosen(self) -> None:
        to = self._chosen()
        if to is None:
            self._say(Text("Choose a USB key, or type the folder to export into."))
            return
        self.run_worker(self.start(to), group="export-start")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id:
            self.run_worker(self.start(event.option.id), group="export-start")

    def on_input_submitted(self, _: Input.Submitted) -> None:
        self._start_chosen()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "export-start":
            self._start_chosen()
        else:
            self.action_close()

    def action_close(self) -> None:
        self.dismiss(self.phase)
