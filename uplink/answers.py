"""What the receiver's answer to a batch means for the worker (``classify``: an ``Outcome``), and a
network failure told in words a venue tech can act on (``describe_network_error``). PROTOCOL.md,
"Uplink", says what each answer is; docs/protocol.md has the table of them."""

from __future__ import annotations

import contextlib
import email.utils
import errno
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import msgspec

from appliance.shared.tablet_text import printable
from appliance.shared.uplink_url import shown_url
from appliance.web.retry import retry_after_s
from uplink.protocol import RecordsAck
from uplink.settings import UplinkSettings

_PROBLEM_TEXT_MAX = 300
_BODY_SHOWN_MAX = 120

OutcomeKind = Literal["acked", "bad-ack", "retry", "pause", "fork", "refused", "rekey", "clock"]
# The box's two hash chains, by the name the receiver gives them: the ledger and the audit log.
Chain = Literal["sheets", "audit"]


@dataclass(frozen=True)
class Outcome:
    """What to do after one attempt.

    ``acked``: the receiver answered 2xx with its ack (``acked`` ids, ``rejected`` (id, reason)).
    ``bad-ack``: a 2xx without a readable ack: the same batch after a backoff, a new key after
    ``BAD_ANSWER_TRIES`` (uplink/worker.py) of them.
    ``retry``: not stored, or unknown (network, timeout, 408/429/5xx): same batch after a backoff.
    ``pause``: will never succeed as configured (credentials, wrong URL): stop until a person acts.
    ``fork``: the receiver holds another record at seq ``fork_seq`` of this box's chain
    ``fork_chain`` ("sheets": the ledger, "audit": the audit log; 409 ``chain-fork``): pause the
    same way, with the ``uplink-fork`` alert.
    ``refused``: the receiver refused this batch as a whole (400/413/422...): split it, or
    quarantine it when it is one record. ``rekey``: the batch id was used for another body: resend
    under a new id. ``clock``: the signature time was refused; sign with the receiver's clock."""

    kind: OutcomeKind
    error: str | None = None
    retry_after_s: float | None = None
    acked: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)
    clock_offset_s: float | None = None
    fork_seq: int | None = None
    fork_chain: Chain = "sheets"
    status: int | None = None


def _problem_text(response: httpx.Response) -> str:
    """The receiver's own words for a refusal (problem+json ``detail`` or ``title``), shortened and
    made printable: they end up in the CLI's output, the console and the alerts."""
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    text = str(body.get("detail") or body.get("title") or "")
    return printable(text[:_PROBLEM_TEXT_MAX])


def _body_shown(response: httpx.Response) -> str:
    """The start of an answer's body as it may be shown (printable, shortened), for an answer that
    was not what it should be."""
    content = response.content
    if not content:
        return "its body was empty"
    text = printable(content[:_BODY_SHOWN_MAX].decode("utf-8", "replace"))
    more = "…" if len(content) > _BODY_SHOWN_MAX else ""
    return f"its body began '{text}'{more}" if more else f"its body was '{text}'"


def _problem_type(response: httpx.Response) -> str:
    return str(_problem_field(response, "type") or "")


def _problem_field(response: httpx.Response, name: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def classify(response: httpx.Response, url: str, box_id: str, now: float) -> Outcome:
    """Turn the receiver's answer into what the worker does next (see ``Outcome``)."""
    status = response.status_code
    said = _problem_text(response)
    said_part = f": {said}" if said else ""
    if 200 <= status < 300:
        # Any 2xx: a receiver answering 201 Created (or 202) acks as well as one answering 200.
        try:
            ack = msgspec.json.decode(response.content, type=RecordsAck)
        except msgspec.DecodeError as exc:
            return Outcome(
                "bad-ack",
                f"the receiver answered {status} without a readable ack ({printable(str(exc))}); "
                f"{_body_shown(response)}",
                status=status,
            )
        return Outcome(
            "acked",
            acked=ack.acked,
            rejected=[(r.id, printable(f"{r.status}: {r.reason}")) for r in ack.rejected],
            status=status,
        )
    if status in (401, 403):
        if _problem_type(response).endswith("/signature-clock-skew"):
            date = response.headers.get("date")
            offset = None
            with contextlib.suppress(TypeError, ValueError, OverflowError):
                offset = email.utils.parsedate_to_datetime(date).timestamp() - now if date else None
            return Outcome(
                "clock",
                f"the receiver refused the signature time: the box's clock is off{said_part}. Set the "
                "box's clock (`timedatectl`)"
                + ("" if offset is not None else "; the answer had no usable Date header to sign with"),
                clock_offset_s=offset,
            )
        return Outcome(
            "pause",
            f"the receiver refused the uplink credentials ({status}){said_part}. Check the token "
            f"(`venuebox uplink configure --token-file`) and that the receiver knows box {box_id}.",
        )
    if 300 <= status < 400:
        where = printable(shown_url(response.headers.get("location", ""))) or "elsewhere"
        return Outcome(
            "pause",
            f"the receiver redirects ({status}) to {where}: configure the final URL "
            "(`venuebox uplink configure --url`); the box does not follow redirects with its token.",
        )
    if status in (404, 405):
        return Outcome(
            "pause",
            f"the receiver has no uplink at {shown_url(url)} ({status}): check the uplink URL "
            "(`venuebox uplink configure --url`).",
        )
    if status in (408, 425, 429) or status >= 500:
        return Outcome(
            "retry", f"the receiver answered {status}{said_part}", retry_after_s=retry_after_s(response, now)
        )
    if status == 409 and _problem_type(response).endswith("/chain-fork"):
        seq = _problem_field(response, "seq")
        seq = seq if isinstance(seq, int) and not isinstance(seq, bool) else 0
        # A receiver that names no chain (older than the audit log's) means the ledger.
        chain: Chain = "audit" if _problem_field(response, "chain") == "audit" else "sheets"
        thing, place, some_place, chain_name, runbook = (
            (
                "audit-log entry",
                "audit-log position",
                "an audit-log position",
                "audit log",
                "on a fork at the cloud",
            )
            if chain == "audit"
            else (
                "sheet",
                "ledger position",
                "a ledger position",
                "ledger",
                '"The cloud holds a different sheet"',
            )
        )
        where = f"{place} {seq}" if seq else some_place
        said = (
            f"the cloud holds a different {thing} at {where} of this box (409 chain-fork): this box's "
            f"{chain_name} and the cloud's copy disagree, so nothing more is sent. Scores are safe on "
            f"the box. Do not reconfigure blindly: see the runbook, uplink section, {runbook}."
        )
        return Outcome("fork", said, fork_seq=seq, fork_chain=chain)
    if status == 422 and _problem_type(response).endswith("/idempotency-mismatch"):
        return Outcome("rekey", f"the receiver saw this batch id with other content{said_part}")
    return Outcome("refused", f"the receiver refused the batch ({status}){said_part}")


def describe_network_error(exc: BaseException, url: str, settings: UplinkSettings) -> str:
    """A network failure in words a venue tech can act on (never the token or the body)."""
    host = shown_url(url)
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = " ".join(str(e) for e in chain).lower()
    cert = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if cert is not None or "certificate verify failed" in text:
        reason = getattr(cert, "verify_message", None) or "verification failed"
        return (
            f"the TLS certificate of {host} is not trusted ({reason}): if the receiver uses a private "
            "CA, give its bundle with `venuebox uplink configure --ca-file`"
        )
    if isinstance(exc, ssl.SSLError) or ("ssl" in text and isinstance(exc, httpx.ConnectError)):
        return f"TLS handshake with {host} failed ({chain[-1]})"
    if isinstance(exc, httpx.ConnectTimeout):
        return f"no connection to {host} within {settings.connect_timeout_s:g} s (network down or blocked?)"
    if isinstance(exc, httpx.ConnectError):
        errnos = {getattr(e, "errno", None) for e in chain}
        if any(isinstance(e, socket.gaierror) for e in chain) or "name or service not known" in text:
            return f"cannot resolve the receiver's host name ({host}): DNS failed; is the venue internet up?"
        if errnos & {errno.ECONNREFUSED} or "refused" in text:
            return f"connection refused by {host}: the receiver is down or the URL's port is wrong"
        if errnos & {errno.ENETUNREACH, errno.EHOSTUNREACH} or "unreachable" in text:
            return f"network unreachable on the way to {host}: is the venue internet up?"
        return f"cannot connect to {host} ({chain[-1]})"
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout):
        return f"the receiver did not answer within {settings.read_timeout_s:g} s"
    if isinstance(exc, TimeoutError):
        return f"the exchange with the receiver took longer than {settings.total_timeout_s:g} s"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        return (
            "the connection dropped before the receiver's answer arrived "
            "(the batch is resent with the same id, so nothing is stored twice)"
        )
    return f"network error talking to {host}: {type(exc).__name__}: {exc}"
