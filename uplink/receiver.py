"""The reference uplink receiver (`venuebox ingest-server`): the cloud end of PROTOCOL.md "Uplink".

It checks each box's bearer token and body signature, stores records per box in SQLite with the
record id unique (a record id seen before is acked again, never stored twice) and each box's
chains unforked (one sheet per ledger seq, one audit record per audit-log seq: a batch that would
put another one there is refused, 409 ``chain-fork``), answers a batch only after the commit that
stores it, replays the stored answer for a repeated ``Idempotency-Key`` (an ack only: a refusal
is not remembered, the batch is judged again), and serves the records back in order
(``GET /v1/boxes/{box_id}/records?after=``), its copy of a box's chains
(``GET /v1/boxes/{box_id}/chains/{sheets|audit}?after=``; ``/ledger`` is the sheets' in its
earlier shape) and ``/metrics``.

Storage and tokens live in ``uplink/receiver_store.py``; this module is the HTTP layer and the
process (``run_receiver``). It never logs a token, a signature or a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from prometheus_client import Counter

from appliance import __version__
from appliance.shared.errors import DomainError, NotFound
from appliance.shared.netloc import http_url
from appliance.shared.secrets_files import atomic_write
from appliance.storage.db import Store
from appliance.web.body import decode
from appliance.web.metrics import HttpMetrics, MetricsMiddleware, metrics_route
from appliance.web.middleware import LogContextMiddleware, RequestIdMiddleware
from appliance.web.problems import (
    GENERIC_TYPES,
    Problem,
    ProblemType,
    descriptions,
    exception_handlers,
    problem_for,
    problem_page,
)
from appliance.web.responses import json_response
from appliance.web.server import EmbeddedServer, bind, server_config
from uplink.protocol import (
    IDEMPOTENCY_HEADER,
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    SIGNATURE_HEADER,
    BadSignature,
    RecordsIn,
    StaleSignature,
    verify_signature,
)
from uplink.receiver_store import (
    CHAINS,
    DB_FILE,
    MAX_IDEMPOTENCY_KEY_CHARS,
    RUNTIME_FILE,
    BatchKeyReused,
    BatchTooLarge,
    BoxTokens,
    ChainFork,
    IdempotencyKeyRequired,
    SignatureClockSkew,
    UplinkUnauthenticated,
    body_hash,
    chain_after,
    check_batch,
    ledger_after,
    migrate,
    private_dir,
    records_after,
    store_batch,
    stored_answer,
)

log = logging.getLogger("venuebox.receiver")

DEFAULT_LIMIT = 500
MAX_LIMIT = 5000

# The receiver's own problem types (PROTOCOL.md "Uplink" lists them).
RECEIVER_TYPES: dict[type[DomainError], ProblemType] = {
    UplinkUnauthenticated: ProblemType(
        401, "uplink-unauthenticated", "Uplink token or body signature refused"
    ),
    SignatureClockSkew: ProblemType(
        401, "signature-clock-skew", "The signature's time is too far from the receiver's clock"
    ),
    IdempotencyKeyRequired: ProblemType(
        400, "idempotency-key-required", "A batch needs an Idempotency-Key header"
    ),
    BatchKeyReused: ProblemType(
        422, "idempotency-mismatch", "This Idempotency-Key was used for a different batch"
    ),
    BatchTooLarge: ProblemType(413, "batch-too-large", f"A batch holds at most {MAX_BATCH_RECORDS} records"),
    ChainFork: ProblemType(
        409, "chain-fork", "The receiver holds a different record at this place of the box's chain"
    ),
}
# What it answers with: the generic types (body decoding, storage) and its own.
_TYPES = GENERIC_TYPES | RECEIVER_TYPES
_DESCRIPTIONS = descriptions(_TYPES)
REALM = "venuebox-receiver"
# Retry-After (seconds) for a store that is stopping or damaged.
_RETRY_AFTER_S = 1
_UNAUTHENTICATED = (
    "the uplink token is missing or is not the one issued for this box "
    "(`venuebox ingest-server add-box BOX_ID` on the receiver issues it)"
)


class ReceiverMetrics(HttpMetrics):
    """The HTTP request timings plus the receiver's own counters (no tokens or payloads in labels)."""

    def __init__(self) -> None:
        super().__init__()

        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, list(labels), registry=self.registry)

        self.batches = counter(
            "venuebox_receiver_batches",
            "Batches answered 200: stored (a new Idempotency-Key) or replayed (its first answer again).",
            ("outcome",),
        )
        self.records_stored = counter(
            "venuebox_receiver_records_stored", "Records stored for the first time."
        )
        self.records_duplicate = counter(
            "venuebox_receiver_records_duplicate",
            "Records acked again, not stored: their id, or their sheet or audit record at its chain "
            "place, was stored.",
        )
        self.records_rejected = counter(
            "venuebox_receiver_records_rejected", "Records rejected as malformed (422 in `rejected`)."
        )
        self.chain_forks = counter(
            "venuebox_receiver_chain_forks",
            "Batches refused 409 chain-fork: a sheet or audit record at a place of the box's ledger or "
            "audit log the receiver holds another one at.",
        )
        self.auth_failures = counter(
            "venuebox_receiver_auth_failures",
            "Refused requests by reason: no-token, unknown-box, wrong-token, bad-signature, clock-skew.",
            ("reason",),
        )


@get("/health")
async def health() -> Response[Any]:
    """Liveness, without auth."""
    return json_response({"status": "ok", "service": "venuebox-receiver", "version": __version__})


def _authenticate(request: Request[Any, Any, Any], box_id: str) -> BoxTokens:
    tokens: BoxTokens = request.app.state.tokens
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    reason = tokens.check(box_id, token.strip() if scheme.lower() == "bearer" else None)
    if reason is not None:
        request.app.state.metrics.auth_failures.labels(reason).inc()
        raise UplinkUnauthenticated(_UNAUTHENTICATED)
    return tokens


@post("/v1/boxes/{box_id:str}/records", status_code=200)
async def post_records(request: Request[Any, Any, Any], box_id: FromPath[str]) -> Response[Any]:
    """A batch of outbox records: each good one stored once and acked, bad ones rejected."""
    tokens = _authenticate(request, box_id)
    store: Store = request.app.state.store
    metrics: ReceiverMetrics = request.app.state.metrics
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise IdempotencyKeyRequired(
            f"send the batch's id in an {IDEMPOTENCY_HEADER} header (1-{MAX_IDEMPOTENCY_KEY_CHARS} "
            "characters), the same on every retry of the batch"
        )
    body = await request.body()  # Litestar answers 413 past request_max_body_size
    try:
        verify_signature(tokens.token(box_id), request.headers.get(SIGNATURE_HEADER), body, time.time())
    except StaleSignature as exc:
        metrics.auth_failures.labels("clock-skew").inc()
        raise SignatureClockSkew(str(exc)) from None
    except BadSignature as exc:
        metrics.auth_failures.labels("bad-signature").inc()
        raise UplinkUnauthenticated(str(exc)) from None
    digest = body_hash(body)
    answer = store.query(lambda conn: stored_answer(conn, box_id, key, digest))
    if answer is not None:
        metrics.batches.labels("replayed").inc()
        return Response(answer, media_type="application/json")
    records = decode(body, RecordsIn).records
    if len(records) > MAX_BATCH_RECORDS:
        raise BatchTooLarge(
            f"{len(records)} records in one batch; send at most {MAX_BATCH_RECORDS} per request"
        )
    batch = check_batch(records)
    try:
        outcome = await store.write(
            lambda conn: store_batch(conn, box_id, key, digest, batch), weight=max(1, len(batch.rows))
        )
    except ChainFork as exc:
        # Not remembered under the key: the same batch is judged again (refused again while the
        # fork stands), and a corrected batch under the same key is not taken for a mismatch.
        metrics.chain_forks.inc()
        log.warning(
            "refused a batch: it forks one of the box's chains",
            extra={"box_id": box_id, "chain": exc.extra["chain"], "seq": exc.extra["seq"]},
        )
        raise
    metrics.batches.labels("replayed" if outcome.replayed else "stored").inc()
    metrics.records_stored.inc(outcome.stored)
    metrics.records_duplicate.inc(outcome.duplicate)
    metrics.records_rejected.inc(outcome.rejected)
    return Response(outcome.answer, media_type="application/json")


@get("/v1/boxes/{box_id:str}/records")
async def get_records(
    request: Request[Any, Any, Any],
    box_id: FromPath[str],
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response[Any]:
    """The box's stored records with seq > ``after``, ascending; ``last_seq`` is the next ``after``."""
    _authenticate(request, box_id)
    store: Store = request.app.state.store
    return json_response(await store.read(lambda conn: records_after(conn, box_id, after, limit)))


@get("/v1/boxes/{box_id:str}/ledger")
async def get_ledger(
    request: Request[Any, Any, Any],
    box_id: FromPath[str],
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response[Any]:
    """The receiver's copy of the box's ledger: its head (highest ledger seq held, its hash), and
    the sheets with ledger seq > ``after``, in ledger order; ``last_seq`` is the next ``after``.
    The ``sheets`` chain of ``/chains``, in the shape this endpoint had before it."""
    _authenticate(request, box_id)
    store: Store = request.app.state.store
    return json_response(await store.read(lambda conn: ledger_after(conn, box_id, after, limit)))


@get("/v1/boxes/{box_id:str}/chains/{chain:str}")
async def get_chain(
    request: Request[Any, Any, Any],
    box_id: FromPath[str],
    chain: FromPath[str],
    after: Annotated[int, QueryParameter(ge=0)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> Response[Any]:
    """The receiver's copy of one of the box's chains, ``sheets`` (the ledger) or ``audit`` (the
    audit log): its head (highest seq held, its hash), how many places it holds, and the entries
    with chain seq > ``after``, in chain order; ``last_seq`` is the next ``after``."""
    _authenticate(request, box_id)
    if chain not in CHAINS:
        raise NotFound(f"no chain {chain!r}: a box's chains are {' and '.join(CHAINS)}")
    store: Store = request.app.state.store
    return json_response(await store.read(lambda conn: chain_after(conn, box_id, chain, after, limit)))


class ChainForkProblem(Problem, kw_only=True, omit_defaults=True):
    """A ``chain-fork`` problem names the chain ("sheets" or "audit"), the place and both records'
    hashes, for the box to act on."""

    chain: str | None = None
    seq: int | None = None
    held_hash: str | None = None
    offered_hash: str | None = None
    record_id: str | None = None


def _problem_of(exc: DomainError, request_id: str) -> tuple[Problem, dict[str, str]]:
    """A domain error as the receiver answers it: a chain fork with its places and hashes, a bearer
    challenge on a 401."""
    problem, headers = problem_for(exc, request_id, _TYPES, _RETRY_AFTER_S)
    if isinstance(exc, ChainFork):
        problem = ChainForkProblem(**msgspec.structs.asdict(problem), **exc.extra)
    if problem.status == 401:
        headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
    return problem, headers


def create_receiver_app(store: Store, tokens: BoxTokens, metrics: ReceiverMetrics | None = None) -> Any:
    """The receiver as an ASGI app: request ids on every answer, problem+json errors, metrics.

    ``/metrics`` and ``/health`` have no auth: serve the receiver on loopback (or behind a proxy that
    only exposes ``/v1``) when the metrics must stay private."""
    metrics = metrics or ReceiverMetrics()
    app = Litestar(
        route_handlers=[
            post_records,
            get_records,
            get_ledger,
            get_chain,
            health,
            problem_page(_DESCRIPTIONS),
            metrics_route(metrics),
        ],
        exception_handlers=exception_handlers(_problem_of, _DESCRIPTIONS, REALM),
        request_max_body_size=MAX_BATCH_BYTES,
        state=State({"store": store, "tokens": tokens, "metrics": metrics}),
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
    # Plain ASGI layers around the whole app, so a 404 for an unrouted path has an id and is counted.
    return RequestIdMiddleware(LogContextMiddleware(MetricsMiddleware(app, metrics, "receiver")))


def run_receiver(
    data_dir: Path,
    host: str = "127.0.0.1",
    port: int = 9090,
    on_ready: Callable[[str], None] | None = None,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve the receiver for ``data_dir`` until SIGTERM/SIGINT, over HTTPS with ``tls`` =
    (certificate chain PEM, key PEM). Once it listens, ``receiver.json`` in the data dir holds
    ``{"pid", "url"}`` (so ``--port 0`` is discoverable) and ``on_ready(url)`` is called; both are
    undone at a clean stop."""
    private_dir(data_dir)
    asyncio.run(_serve(data_dir, host, port, on_ready, tls))


async def _serve(
    data_dir: Path,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None,
    tls: tuple[Path, Path] | None,
) -> None:
    sock = bind(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    url = http_url("https" if tls else "http", bound_host, bound_port)
    runtime_path = data_dir / RUNTIME_FILE
    store = Store(data_dir / DB_FILE, schema=migrate, create=True)
    server = EmbeddedServer(
        server_config(
            create_receiver_app(store, BoxTokens(data_dir)),
            ssl_certfile=str(tls[0]) if tls else None,
            ssl_keyfile=str(tls[1]) if tls else None,
        )
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, setattr, server, "should_exit", True)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                await task  # it could not start: its error propagates
                return
            await asyncio.sleep(0.01)
        atomic_write(runtime_path, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0o600)
        log.info("receiving", extra={"url": url})
        if on_ready:
            on_ready(url)
        await task
    finally:
        server.should_exit = True
        with contextlib.suppress(BaseException):
            await task
        runtime_path.unlink(missing_ok=True)
        store.close()
        sock.close()
