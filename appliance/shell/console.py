"""Where the venue console (tui/) finds the running daemon of a data dir, the way a tech would: the
data dir's ``daemon.json`` (written by a running daemon, removed when it stops) says where the admin
API listens, and the admin token is the data dir's ``admin.token``. The console's client asks again
after every failed call."""

from __future__ import annotations

import json

from appliance.core.config import RUNTIME_FILE, Config
from appliance.shared.secrets_files import InsecureSecretFile, read_secret
from tui.client import Endpoint, NotRunning, Unreachable


class DaemonLocator:
    """A ``tui.client.Locate`` for the daemon of ``config``'s data dir. It remembers the admin URL of
    the last ``daemon.json`` it read, so a daemon that stopped is "not running, it was on ...", never
    a connection error to the settings' admin port (a daemon may have been on another one)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._was_on: str | None = None

    def __call__(self) -> Endpoint:
        config = self.config
        runtime_path = config.data_dir / RUNTIME_FILE
        try:
            runtime = json.loads(runtime_path.read_text())
            url = runtime["admin_url"]
        except FileNotFoundError:
            raise NotRunning(self._was_on, config.data_dir) from None
        except (OSError, ValueError, KeyError) as exc:
            raise Unreachable(f"cannot read {runtime_path}: {exc}") from exc
        pid = runtime.get("pid") if isinstance(runtime.get("pid"), int) else None
        self._was_on = url
        try:
            token = read_secret(config.admin_token_path)
        except FileNotFoundError as exc:
            raise Unreachable(
                f"no admin token at {config.admin_token_path}: is this the box's data dir?"
            ) from exc
        except PermissionError as exc:
            raise Unreachable(
                f"cannot read {config.admin_token_path}: run the console as the box's user or root"
            ) from exc
        except InsecureSecretFile as exc:
            raise Unreachable(str(exc)) from exc
        return Endpoint(url.rstrip("/"), token, pid)
