"""The venue console: a Textual App over the daemon's admin API.

Attributes down, messages up: the App owns the one ``AdminClient`` and polls the box's status twice a
second into ``status`` (and the health of the link into ``link``); screens watch those and ask the
App for anything else through the same client. A failed poll never ends the console: it shows
"daemon not running" (with the address it was on) or "daemon unreachable since ..." and keeps
polling, so a restarted daemon is picked up by itself.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar

from textual.app import App, ScreenStackError, SystemCommand
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen

from appliance.shared.status import ConsoleStatus, FreezeCategory
from appliance.shared.times import utcnow
from tui.client import AdminClient, AdminError, NotRunning, Unreachable
from tui.screens.alerts import AlertsScreen
from tui.screens.audit import AuditScreen
from tui.screens.base import BoxScreen
from tui.screens.dialogs import ConfirmScreen, FreezeDialog
from tui.screens.export import ExportDialog, Phase
from tui.screens.overview import OverviewScreen
from tui.screens.pairing import PairingScreen
from tui.screens.results import ResultsScreen
from tui.screens.schedule import ScheduleScreen
from tui.screens.scores import ScoresScreen
from tui.screens.tablets import TabletsScreen
from tui.state import Link

STATUS_POLL_S = 0.5  # a freeze from anywhere shows on every screen within a second
SCREEN_POLL_S = 1.0  # the visible screen's own figures (tablets, grid, feed)
EXPORT_WATCH_S = 1.0  # an export left running when its window closed: how often to look at it

SCREENS_BY_KEY = {
    "1": ("overview", "Overview"),
    "2": ("tablets", "Tablets"),
    "3": ("scores", "Scores"),
    "4": ("pairing", "Pairing"),
    "5": ("alerts", "Alerts"),
    "6": ("audit", "Audit"),
    "7": ("results", "Results"),
    "8": ("schedule", "Schedule"),
}


class ConsoleApp(App[None]):
    """``venuebox console``."""

    TITLE = "venuebox console"
    CSS_PATH = "console.tcss"
    MODES: ClassVar[dict[str, Any]] = {
        "overview": OverviewScreen,
        "tablets": TabletsScreen,
        "scores": ScoresScreen,
        "pairing": PairingScreen,
        "alerts": AlertsScreen,
        "audit": AuditScreen,
        "results": ResultsScreen,
        "schedule": ScheduleScreen,
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(key, f"switch_mode('{mode}')", title, show=False, id=f"screen-{mode}")
            for key, (mode, title) in SCREENS_BY_KEY.items()
        ),
        Binding("f", "freeze_toggle", "Freeze/unfreeze"),
        # F2 works even while a text field has the focus.
        Binding("f2", "freeze_toggle", "Freeze/unfreeze", show=False, priority=True),
        Binding("question_mark,f1", "help", "Help"),
        Binding("q", "quit", "Quit"),
        # Last: where the screen's own keys leave no room at 80 columns, it is the hint that goes.
        Binding("u", "uplink_sync", "Sync uplink"),
        Binding("e", "export", "Export to USB"),
    ]

    status: reactive[ConsoleStatus | None] = reactive(None, always_update=True, init=False)
    link: reactive[Link | None] = reactive(None, init=False)

    def __init__(
        self,
        client: AdminClient,
        *,
        start_screen: str = "overview",
        poll: bool = True,
        theme: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        super().__init__()
        self.client = client
        self.now = clock  # the console's own clock (pairing-code countdowns, link times)
        self._start_screen = start_screen
        self._poll = poll
        self._polling = False
        if theme:
            self.theme = theme

    async def on_mount(self) -> None:
        await self.switch_mode(self._start_screen)
        await self.poll_status()
        # Everything built so far (modules, widgets, styles) lives as long as the console: keep it
        # out of the garbage collector's full passes, which otherwise stall a refresh now and then.
        gc.freeze()
        if self._poll:
            self.set_interval(STATUS_POLL_S, self.poll_status)
            self.set_interval(SCREEN_POLL_S, self.poll_screen)

    async def on_unmount(self) -> None:
        await self.client.aclose()

    # Polling ------------------------------------------------------------------------------------
    async def poll_status(self) -> None:
        """Fetch the status once; a poll still running (slow daemon) is not stacked on."""
        if self._polling:
            return
        self._polling = True
        try:
            status = await self.client.status()
        except NotRunning as exc:
            self._set_link(False, exc.where, not_running=True)
        except Unreachable as exc:
            self._set_link(False, str(exc))
        except AdminError as exc:
            self._set_link(False, f"the admin API refused the console ({exc})")
        else:
            self._set_link(True)
            self.status = status
        finally:
            self._polling = False

    async def poll_screen(self) -> None:
        try:
            screen = self.screen
        except ScreenStackError:
            return  # the console is closing: a last tick of the timer finds no screen
        if isinstance(screen, BoxScreen) and self.link is not None and self.link.ok:
            await screen.refresh_now()

    def _set_link(self, ok: bool, error: str | None = None, *, not_running: bool = False) -> None:
        if self.link is None or self.link.ok != ok or (not ok and self.link.error != error):
            since = self.link.since if self.link and self.link.ok == ok else self.now()
            self.link = Link(ok, since, error, not_running)

    def _away(self) -> str:
        """Why the daemon cannot be asked, in the words of a sentence."""
        return "is not running" if self.link is not None and self.link.not_running else "cannot be reached"

    # Actions ------------------------------------------------------------------------------------
    def action_help(self) -> None:
        # Imported when first asked for: the Markdown widget costs start-up time on a small box.
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.status.settings.presence_online_s if self.status else None))

    def action_freeze_toggle(self) -> None:
        if self.status is None or (self.link is not None and not self.link.ok):
            self.notify(
                f"The daemon {self._away()}, so the console cannot freeze. On the box's shell, "
                '`venuebox freeze --reason "..."` works even without the daemon.',
                title="Cannot freeze from here",
                severity="error",
                timeout=8,
            )
            return
        if self.status.freeze.frozen:
            self.push_screen(
                ConfirmScreen(
                    "Unfreeze scoring?",
                    "Judges' tablets can submit again and their queued sheets will flush.",
                    confirm_label="Unfreeze",
                ),
                self._unfreeze_confirmed,
            )
        else:
            self.push_screen(FreezeDialog(), self._freeze_reason_given)

    def _freeze_reason_given(self, answer: tuple[FreezeCategory, str] | None) -> None:
        if answer is None:
            return
        category, reason = answer

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(self._do_freeze(category, reason), group="freeze")

        self.push_screen(
            ConfirmScreen(
                "Freeze all scoring now?",
                f"Every judge's tablet stops submitting until you unfreeze.\nReason ({category}): {reason}",
                confirm_label="Freeze",
                danger=True,
            ),
            confirmed,
        )

    def _unfreeze_confirmed(self, yes: bool | None) -> None:
        if yes:
            self.run_worker(self._do_unfreeze(), group="freeze")

    async def _do_freeze(self, category: FreezeCategory, reason: str) -> None:
        await self._act(self.client.freeze(category, reason), "Scoring frozen")

    async def _do_unfreeze(self) -> None:
        await self._act(self.client.unfreeze(), "Scoring open again")

    def action_uplink_sync(self) -> None:
        if self.link is not None and not self.link.ok:
            self.notify(
                f"The daemon {self._away()}, so the console cannot ask the uplink to send. On the box's "
                "shell, `venuebox uplink sync` asks it directly.",
                title="Cannot sync from here",
                severity="error",
                timeout=8,
            )
            return
        self.run_worker(self._do_uplink_sync(), group="uplink")

    async def _do_uplink_sync(self) -> None:
        """Ask the box's uplink to try now (ends a backoff, an open circuit or a pause). The answer
        shows on the overview as the uplink's state and last error change."""
        try:
            await self.client.uplink_sync()
        except AdminError as exc:
            # 409 "not configured" is advice, not a failure of the console.
            severity: SeverityLevel = "warning" if exc.status == 409 else "error"
            self.notify(exc.detail or exc.title, title=exc.title, severity=severity, timeout=10, markup=False)
            return
        except Unreachable as exc:
            self.notify(str(exc), title="Not done", severity="error", timeout=10, markup=False)
            return
        self.notify("Uplink sync requested: the box tries to send its backlog now", timeout=4)
        await self.poll_status()

    def action_export(self) -> None:
        if self.link is not None and not self.link.ok:
            self.notify(
                f"The daemon {self._away()}, so the console cannot export. On the box's shell, "
                "`venuebox export --to PATH` exports without the daemon.",
                title="Cannot export from here",
                severity="error",
                timeout=8,
            )
            return
        if isinstance(self.screen, ExportDialog):
            return
        # The window shows the export itself: no end-of-export notice on top of it.
        self.workers.cancel_group(self, "export-watch")
        self.push_screen(ExportDialog(), self._export_closed)

    def _export_closed(self, phase: Phase | None) -> None:
        if phase == "running":
            self.run_worker(self._watch_export(), group="export-watch", exclusive=True)

    async def _watch_export(self) -> None:
        """The export carries on in the daemon after its window closed: say how it ended."""
        while True:
            await asyncio.sleep(EXPORT_WATCH_S)
            try:
                job = (await self.client.export_status()).job
            except (Unreachable, AdminError):
                continue  # the banner already says when the daemon is gone
            if job.state == "done":
                self.notify(
                    f"{job.path}\nKeep the key safe. To check it: venuebox export verify PATH",
                    title="USB export done",
                    timeout=15,
                    markup=False,
                )
            elif job.state == "failed":
                self.notify(
                    f"{job.error}\nPress e to try another key.",
                    title="USB export failed",
                    severity="error",
                    timeout=30,
                    markup=False,
                )
            if job.state != "running":
                return

    async def _act(self, call: Any, done: str) -> bool:
        """Run a write against the box; tell the tech how it went in plain words."""
        try:
            await call
        except (Unreachable, AdminError) as exc:
            self.notify(str(exc), title="Not done", severity="error", timeout=10)
            return False
        self.notify(done, timeout=4)
        await self.poll_status()
        return True

    # Command palette ----------------------------------------------------------------------------
    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for key, (mode, title) in SCREENS_BY_KEY.items():
            yield SystemCommand(f"Go to {title}", f"Show the {title} screen (key {key})", self._goto(mode))
        frozen = self.status is not None and self.status.freeze.frozen
        yield SystemCommand(
            "Unfreeze scoring" if frozen else "Freeze scoring",
            "Halt (or resume) every competition write on the box (key f)",
            self.action_freeze_toggle,
        )
        yield SystemCommand(
            "Sync uplink",
            "Ask the box to send its backlog to the cloud now, whatever its backoff or pause (key u)",
            self.action_uplink_sync,
        )
        yield SystemCommand(
            "Export to USB",
            "Copy the scores, the ledger and the encrypted database to a USB key, with progress (key e)",
            self.action_export,
        )
        yield SystemCommand("Verify chains", "Check the ledger and audit hash chains", self._verify)
        yield SystemCommand("New pairing code", "Pair a judge's tablet", self._goto("pairing"))
        yield SystemCommand("Help", "Keys and what each screen shows (key ?)", self.action_help)
        yield from super().get_system_commands(screen)

    def _goto(self, mode: str) -> Any:
        def go() -> None:
            switching: Awaitable[None] = self.switch_mode(mode)
            self.run_worker(switching)

        return go

    def _verify(self) -> None:
        async def go() -> None:
            await self.switch_mode("audit")
            screen = self.screen
            if isinstance(screen, AuditScreen):
                await screen.action_verify()

        self.run_worker(go())
