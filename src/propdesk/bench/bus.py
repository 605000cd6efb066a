"""``propdesk bench bus``: a quote accepted in process A until it is applied in process B's price store.

Our path, per quote: in A, ``QuoteStore.put`` (accepted in memory) -> ``store.publisher`` -> ``PriceBus.publish``
(queued; the bus thread woken once per batch, which encodes and writes the batch at once, acks taken in bulk) ->
nats-server (delivered to every subscriber, captured by the retained stream) -> B's core-NATS wildcard
subscription -> per-publisher numbering (duplicates, gaps), decode -> ``QuoteStore.apply_many`` in B (one lock per
batch). Both stores are in memory: the bus path is what is measured (the accepting process also persists the
quote in PostgreSQL, which the ``orders`` and ``quotes`` scenarios cover). The limit: bare nats-py between the
same two processes: A ``nc.publish`` of the same encoded bytes on a core subject, B a core subscription that only
records the arrival.

A publishes at ``rate`` quotes/s (default 5,000, the target), paced the same way for both: every quote that is due
is sent, then a 100 us sleep. Latency per quote: ``time.monotonic_ns`` when A hands it over (before ``put`` /
``publish``) to when B applied / received it; Linux's monotonic clock is one clock for every process of the
machine. Trials are interleaved (path, limit, ...); ``ratio_to_limit`` is the median over trials of the path's p50
latency over the limit's. ``throughput_per_s`` is quotes over the time from the first hand-over in A to the last
apply in B. ``correct``: every quote arrived in B, in order per symbol, with exact values (symbol, bid, ask, ts).

With ``NATS_URL`` set that server is used (its streams of this run are deleted at the end); else a temporary
embedded nats-server is started and removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..bus.bridge import PriceBus
from ..bus.client import endpoint_from_url
from ..bus.embedded import EmbeddedNats, NatsEndpoint
from ..bus.quotes import encode
from ..bus.subjects import Subjects
from ..domain.quotes import Quote
from ..marketdata.store import QuoteStore
from .common import BenchResult, ProgressFn, latency_summary, machine_info, median_of, no_progress

SYMBOLS = (("EURUSD", "1.08000", 5), ("GBPUSD", "1.26000", 5), ("USDJPY", "150.000", 3), ("XAUUSD", "2030.00", 2))
_T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
_PACE_SLEEP_S = 0.0001


def make_quotes(n: int, seed: int = 42) -> list[Quote]:
    """``n`` quotes over a few symbols, each symbol's strictly newer and different from its previous one."""
    out = []
    for i in range(n):
        sym, base, places = SYMBOLS[(i + seed) % len(SYMBOLS)]
        step = Decimal(1).scaleb(-places)
        bid = Decimal(base) + step * ((i * 7919 + seed) % 997)
        out.append(Quote(sym, bid, bid + step * (1 + i % 3), _T0 + timedelta(microseconds=i * 100 + 1), 0, "bench"))
    return out


class _RecordingStore(QuoteStore):
    """B's price store, noting when each quote was applied."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[int, Quote]] = []

    def apply(self, quote: Quote) -> Quote | None:
        stored = super().apply(quote)
        if stored is not None:
            self.applied.append((time.monotonic_ns(), stored))
        return stored

    def apply_many(self, quotes: Iterable[Quote]) -> list[Quote]:
        stored = super().apply_many(quotes)
        now = time.monotonic_ns()
        self.applied.extend((now, q) for q in stored)
        return stored


def _await_count(count: Any, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while count() < n and time.monotonic() < deadline:
        time.sleep(0.01)  # arrival times are taken where quotes are applied; polling often only takes the GIL


async def _limit_receive(
    endpoint: NatsEndpoint, subject: str, n: int, conn: Connection, timeout_s: float
) -> list[tuple[int, bytes]]:
    import nats

    nc = await nats.connect(endpoint.url, user=endpoint.user, password=endpoint.password)
    got: list[tuple[int, bytes]] = []
    done = asyncio.Event()

    async def on_msg(msg: Any) -> None:
        got.append((time.monotonic_ns(), msg.data))
        if len(got) >= n:
            done.set()

    await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000)
    await nc.flush()
    conn.send("ready")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(done.wait(), timeout_s)
    await nc.close()
    return got


def process_b(conn: Connection, url: str, user: str | None, password: str | None) -> None:
    """Process B: runs each trial A asks for and sends back what arrived, with arrival times."""
    endpoint = NatsEndpoint(url, user, password)
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            return
        kind, name, n, timeout_s = cmd
        if kind == "path":
            store = _RecordingStore()
            bus = PriceBus(endpoint, name="bench-b").connect()
            bus.attach(Subjects(name), store)
            store.applied.clear()  # last quotes of an earlier trial are not this trial's
            conn.send("ready")
            _await_count(lambda s=store: len(s.applied), n, timeout_s)
            bus.close()
            conn.send([(t, q.symbol, str(q.bid), str(q.ask), q.ts) for t, q in store.applied])
        else:
            got = asyncio.run(_limit_receive(endpoint, name, n, conn, timeout_s))
            conn.send([(t, data) for t, data in got])


def _paced(n: int, rate: float, send: Any) -> list[int]:
    """Call ``send(i)`` for i in 0..n-1 at ``rate`` per second; returns the hand-over times."""
    times = [0] * n
    start = time.monotonic_ns()
    i = 0
    while i < n:
        due = min(n, int((time.monotonic_ns() - start) * rate / 1e9) + 1)
        while i < due:
            times[i] = time.monotonic_ns()
            send(i)
            i += 1
        time.sleep(_PACE_SLEEP_S)
    return times


def _path_trial(
    endpoint: NatsEndpoint, conn: Connection, quotes: list[Quote], rate: float, timeout_s: float
) -> tuple[list[int], list[Any]]:
    name = "bench" + uuid.uuid4().hex[:10]
    store = QuoteStore()
    bus = PriceBus(endpoint, name="bench-a").connect()
    try:
        bus.attach(Subjects(name), store)
        conn.send(("path", name, len(quotes), timeout_s))
        assert conn.recv() == "ready"
        sent = _paced(len(quotes), rate, lambda i: store.put(quotes[i]))
        got = conn.recv()
        assert bus.quotes is not None
        with contextlib.suppress(Exception):
            bus._call(_delete_streams(bus, name), 10)  # leave nothing behind on a shared server
    finally:
        bus.close()
    return sent, got


async def _delete_streams(bus: PriceBus, name: str) -> None:
    assert bus.quotes is not None
    subjects = Subjects(name)
    if bus.receiver is not None:
        await bus.receiver.stop()
    for stream in (subjects.last_stream, subjects.quotes_stream):
        with contextlib.suppress(Exception):
            await bus.quotes.js.delete_stream(stream)


def _limit_trial(
    endpoint: NatsEndpoint, conn: Connection, payloads: list[bytes], rate: float, timeout_s: float
) -> tuple[list[int], list[Any]]:
    import nats

    subject = "bench." + uuid.uuid4().hex[:10]
    loop = asyncio.new_event_loop()
    try:
        nc = loop.run_until_complete(nats.connect(endpoint.url, user=endpoint.user, password=endpoint.password))
        conn.send(("limit", subject, len(payloads), timeout_s))
        assert conn.recv() == "ready"

        async def pump() -> list[int]:
            times = [0] * len(payloads)
            start = time.monotonic_ns()
            i = 0
            while i < len(payloads):
                due = min(len(payloads), int((time.monotonic_ns() - start) * rate / 1e9) + 1)
                while i < due:
                    times[i] = time.monotonic_ns()
                    await nc.publish(subject, payloads[i])
                    i += 1
                await asyncio.sleep(_PACE_SLEEP_S)
            await nc.flush()
            return times

        sent = loop.run_until_complete(pump())
        got = conn.recv()
        loop.run_until_complete(nc.close())
    finally:
        loop.close()
    return sent, got


def check_arrivals(quotes: list[Quote], got: list[Any]) -> list[str]:
    """Problems with what B applied: every quote, in order per symbol, exact values."""
    problems: list[str] = []
    if len(got) != len(quotes):
        problems.append(f"B applied {len(got)} quotes of {len(quotes)}")
    want: dict[str, list[tuple[str, str, str, datetime]]] = {}
    for q in quotes:
        want.setdefault(q.symbol, []).append((q.symbol, str(q.bid), str(q.ask), q.ts))
    have: dict[str, list[tuple[str, str, str, datetime]]] = {}
    for _t, sym, bid, ask, ts in got:
        have.setdefault(sym, []).append((sym, bid, ask, ts))
    for sym, seq in want.items():
        if have.get(sym) != seq:
            first = next((i for i, (a, b) in enumerate(zip(seq, have.get(sym, []), strict=False)) if a != b), None)
            problems.append(f"{sym}: {len(have.get(sym, []))} applied of {len(seq)}, first difference at {first}")
    return problems


def run(
    *,
    quotes: int = 20_000,
    rate: float = 5_000.0,
    trials: int = 5,
    seed: int = 42,
    timeout_s: float = 60.0,
    progress: ProgressFn = no_progress,
) -> BenchResult:
    """Measure the bus path against bare nats-py between two processes; see the module docstring."""
    qs = make_quotes(quotes, seed)
    payloads = [encode(q, "bench") for q in qs]
    tmp: Path | None = None
    server: EmbeddedNats | None = None
    url = os.environ.get("NATS_URL")
    if url:
        endpoint = endpoint_from_url(url)
    else:
        tmp = Path(tempfile.mkdtemp(prefix="propdesk-bench-bus-"))
        server = EmbeddedNats(tmp / "nats")
        endpoint = server.start()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=process_b, args=(child, endpoint.url, endpoint.user, endpoint.password), daemon=True)
    proc.start()
    problems: list[str] = []
    path_trials: list[dict[str, float]] = []
    limit_trials: list[dict[str, float]] = []
    try:
        for trial in range(trials):
            sent, got = _path_trial(endpoint, parent, qs, rate, timeout_s)
            if trial == 0 or len(got) != len(qs):
                problems.extend(check_arrivals(qs, got))
            lat = [t - s for (t, *_), s in zip(got, sent, strict=False)]
            span = (got[-1][0] - sent[0]) if got else 0
            path_trials.append({**latency_summary(lat), "throughput_per_s": len(got) * 1e9 / span if span else 0.0})
            progress("bus: path", 0.5 / trials)
            sent, lgot = _limit_trial(endpoint, parent, payloads, rate, timeout_s)
            if len(lgot) != len(payloads):
                problems.append(f"limit: B received {len(lgot)} of {len(payloads)}")
            llat = [t - s for (t, _), s in zip(lgot, sent, strict=False)]
            lspan = (lgot[-1][0] - sent[0]) if lgot else 0
            limit_trials.append(
                {**latency_summary(llat), "throughput_per_s": len(lgot) * 1e9 / lspan if lspan else 0.0}
            )
            progress("bus: limit", 0.5 / trials)
        parent.send(("stop",))
        proc.join(30)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(10)
        if server is not None:
            server.destroy()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    ratios = sorted(
        p["latency_us_p50"] / lt["latency_us_p50"]
        for p, lt in zip(path_trials, limit_trials, strict=True)
        if lt["latency_us_p50"]
    )
    ratio = round(ratios[len(ratios) // 2], 3) if ratios else 0.0
    metrics = {
        key: median_of(path_trials, key)
        for key in ("latency_us_p50", "latency_us_p99", "latency_us_max", "throughput_per_s")
    }
    metrics.update(quotes_per_trial=quotes, published_rate_per_s=rate)
    limit = {
        key: median_of(limit_trials, key)
        for key in ("latency_us_p50", "latency_us_p99", "latency_us_max", "throughput_per_s")
    }
    correct = not problems and bool(path_trials)
    return BenchResult(
        "bus",
        {"quotes": quotes, "rate": rate, "trials": trials, "seed": seed, "server": "NATS_URL" if url else "embedded"},
        metrics,
        limit,
        ratio,
        correct,
        machine_info(),
        problems,
    )
