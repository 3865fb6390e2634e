"""`$VENUEBOX_DATA_DIR` names the box for every command, as `--data-dir` does (docs/operations.md):
each command that takes a data dir (or builds a new one from it: `restore`, `recover`) run as a tech
runs it, in a process of its own, with only the environment variable set."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.core.config import load_config
from tests.conftest import ROOT, SAMPLE_EVENT, box_id_of, make_box, venuebox, wait_for


@pytest.fixture(autouse=True)
def _no_data_dir_from_the_test_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets names a data dir (not the shell or service the tests run under)."""
    for var in ("VENUEBOX_DATA_DIR", "STATE_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)


def on(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`venuebox ARGS` with no --data-dir, only $VENUEBOX_DATA_DIR, from a folder with no data dir in
    it (so ./venuebox-data, the last fallback, is not where anything lands)."""
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=data_dir.parent,
        env={**os.environ, "VENUEBOX_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)},
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(done).stdout)


def test_every_command_that_takes_a_data_dir_honours_the_environment(tmp_path: Path) -> None:
    box = tmp_path / "box"

    # init makes the box where the variable says, and nothing in the working folder.
    assert f"in {box}" in ok(on(box, "init", "--name", "Env box")).stdout
    assert (box / "venuebox.sqlite").exists() and not (tmp_path / "venuebox-data").exists()
    ok(on(box, "event", "import", str(SAMPLE_EVENT)))
    code = as_json(on(box, "pair", "new", "--judge", "J1", "--json"))
    assert code["judge"]["id"] == "J1"
    assert as_json(on(box, "devices", "--json")) == []
    ok(on(box, "freeze", "--category", "technical", "--reason", "Env check"))
    status = as_json(on(box, "status", "--json"))
    assert status["box"]["name"] == "Env box" and status["freeze"]["frozen"] is True
    ok(on(box, "unfreeze"))
    ok(on(box, "verify"))
    assert as_json(on(box, "tls", "show", "--json"))["fingerprint"]
    assert as_json(on(box, "uplink", "status", "--json"))["configured"] is False
    snapshot_line = ok(on(box, "backup", "now")).stdout
    snapshot = Path(snapshot_line.split()[1])
    assert snapshot.parent == box / "backups", snapshot_line
    ok(on(box, "backup", "verify"))
    usb = tmp_path / "usb"
    usb.mkdir()
    ok(on(box, "export", "--to", str(usb)))
    assert any(usb.iterdir())

    # restore: the box the variable names is "this box", whose own key opens its own snapshots (as
    # with --data-dir); no --identity needed.
    restored = tmp_path / "restored"
    done = ok(on(box, "restore", str(snapshot), "--to", str(restored), "--no-cloud"))
    assert f"this box: {box} ($VENUEBOX_DATA_DIR)" in done.stdout
    assert box_id_of(load_config(restored, environ={})) == box_id_of(load_config(box, environ={}))

    # recover: the box the variable names is the old box (--from), its backups where it keeps them.
    recovered = tmp_path / "recovered"
    done = ok(on(box, "recover", "--to", str(recovered), "--no-cloud"))
    assert f"old box: {box} ($VENUEBOX_DATA_DIR)" in done.stdout
    assert box_id_of(load_config(recovered, environ={})) == box_id_of(load_config(box, environ={}))


def test_restore_of_another_boxs_snapshot_says_the_variable_named_this_box(tmp_path: Path) -> None:
    other = make_box(tmp_path / "other")
    ok(venuebox(other, "backup", "now"))
    [snapshot] = sorted((other.data_dir / "backups").glob("snapshot-*.sqlite.age"))
    box = make_box(tmp_path / "box").data_dir
    done = on(box, "restore", str(snapshot), "--to", str(tmp_path / "restored"), "--no-cloud")
    assert done.returncode == 1
    assert "opens only its own snapshots" in done.stderr and "without $VENUEBOX_DATA_DIR" in done.stderr
    assert not (tmp_path / "restored").exists()


def test_recover_says_when_the_variable_names_no_folder(tmp_path: Path) -> None:
    done = on(tmp_path / "nothing-here", "recover", "--to", str(tmp_path / "new"))
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert f"no folder at {tmp_path / 'nothing-here'} ($VENUEBOX_DATA_DIR" in line and "--from" in line


def test_serve_is_run_under_its_old_name_and_says_so_and_runs_on_the_environments_box(
    tmp_path: Path,
) -> None:
    help_text = ok(venuebox(None, "--help")).stdout
    assert "serve" in help_text and "Alias of `run`" in help_text
    assert "Alias of `venuebox run`" in ok(venuebox(None, "serve", "--help")).stdout

    box = make_box(tmp_path / "box").data_dir
    runtime = box / "daemon.json"
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin-port",
            "0",
        ],
        cwd=tmp_path,
        env={**os.environ, "VENUEBOX_DATA_DIR": str(box), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        info = wait_for("daemon.json in the environment's data dir", lambda: _runtime(runtime), timeout=30)
        assert info["pid"] == daemon.pid
        # The CLI on the same variable sees that daemon.
        assert as_json(on(box, "status", "--json"))["daemon"]["pid"] == daemon.pid
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    assert daemon.returncode == 0
    assert not runtime.exists()


def _runtime(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def test_demo_honours_the_environment_but_never_scores_into_or_deletes_a_real_box(tmp_path: Path) -> None:
    box = make_box(tmp_path / "box").data_dir
    before = sorted(p.name for p in box.iterdir())
    for args in (["demo"], ["demo", "--fresh"]):
        done = on(box, *args, "--port", "0", timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        [line] = done.stderr.strip().splitlines()
        assert f"{box} ($VENUEBOX_DATA_DIR) holds the box 'test-box'" in line, line
        assert sorted(p.name for p in box.iterdir()) == before
    assert not (tmp_path / "venuebox-demo").exists()
