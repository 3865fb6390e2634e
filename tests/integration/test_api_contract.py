"""The tablet and admin APIs against their own live OpenAPI documents, fuzzed by schemathesis (its
`st` CLI) on a running box: a fixed number of generated cases per operation, with valid credentials
and without. Nothing may answer 5xx, break the documented schema (status, content type, headers,
body), or send a problem body without a request id (tests/schemathesis_hooks.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningBox, make_box, needs_tool

ROOT = Path(__file__).resolve().parents[2]
ST = Path(sys.executable).with_name("st")
EXAMPLES = 40
ROTATE = "/api/v1/token"
CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "problem_has_request_id",
    ]
)
pytestmark = needs_tool(ST.exists(), "schemathesis is not installed (the test extra has it)")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBox]:
    # Limits high enough that the fuzzer reaches the handlers instead of the rate limiter.
    root = tmp_path_factory.mktemp("fuzz")
    (root / "usb").mkdir()
    config = make_box(
        root / "box",
        device_rate_per_s=100_000.0,
        device_burst=100_000,
        pair_attempts_per_minute=100_000,
        pair_failures_per_minute_box=100_000,
        # Exports the fuzzer starts may only land in a scratch folder, never anywhere on the machine.
        export_roots=[str(root / "usb")],
        # The tablet API is fuzzed as tablets reach it: over TLS, trusting the box's certificate.
        tls=True,
    )
    running = RunningBox(config).start()
    yield running
    running.stop()


def fuzz(url: str, token: str | None, *only: str, ca: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``st run`` against ``url``'s OpenAPI; ``only`` = st's operation filters (e.g. an
    --include-path); ``ca`` = the certificate to trust for an https URL."""
    args = [str(ST), "run", f"{url}/schema/openapi.json", "--checks", CHECKS, "--max-examples", str(EXAMPLES)]
    args += ["--seed", "20261130", "--no-color", *only]
    if ca is not None:
        args += ["--tls-verify", str(ca)]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    # A scratch working directory: st keeps its example databases there, and each run starts clean.
    with tempfile.TemporaryDirectory(prefix="vb-fuzz-") as scratch:
        return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=scratch, env=env)


@pytest.mark.parametrize("api", ["tablet", "admin"])
@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
def test_the_live_api_keeps_its_documented_contract(box: RunningBox, api: str, authenticated: bool) -> None:
    only: tuple[str, ...] = ()
    ca = None
    if api == "tablet":
        assert box.tablet_url.startswith("https://")
        ca = box.config.data_dir / "tls" / "box.crt"
        url = box.tablet_url
        token = box.pair("J1", "fuzzer").pairing["token"] if authenticated else None
        # Rotating the token would lock the rest of the run out: the rotation has its own run.
        only = ("--exclude-path", ROTATE) if authenticated else ()
    else:
        url = box.admin_url
        token = box.config.admin_token_path.read_text().strip() if authenticated else None
    done = fuzz(url, token, *only, ca=ca)
    tail = "\n".join(done.stdout.splitlines()[-60:])
    assert done.returncode == 0, f"schemathesis found problems:\n{tail}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "generated" in done.stdout, tail
    if authenticated:  # the credentials got the fuzzer past the guards, into the handlers
        assert "Authentication failed" not in done.stdout, tail


def test_token_rotation_keeps_its_documented_contract(box: RunningBox) -> None:
    token = box.pair("J2", "rotating fuzzer").pairing["token"]
    done = fuzz(box.tablet_url, token, "--include-path", ROTATE, ca=box.config.data_dir / "tls" / "box.crt")
    tail = "\n".join(done.stdout.splitlines()[-40:])
    assert done.returncode == 0, f"schemathesis found problems:\n{tail}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout, tail
