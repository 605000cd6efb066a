"""Rulebooks and plans: parsed from plain mappings (YAML/JSON are read at the edge), validated precisely.

A plan is a rulebook plus ``offers`` (sizes the firm sells). ``Rulebook.for_offer`` gives the rulebook an
account on that offer is frozen with: the offer's starting balance and its ``overrides`` applied. Percent
parameters scale with the starting balance by construction; absolute amounts come from overrides.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import time
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .schema import RULES, RulebookError, dec, integer, validate_rule

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
TOP_KEYS = {
    "id",
    "version",
    "name",
    "description",
    "currency",
    "starting_balance",
    "timezone",
    "day_starts_at",
    "rules",
    "phases",
    "offers",
}
PHASE_KEYS = {"id", "name", "rules", "profit_split_pct", "scaling", "payout"}
OFFER_KEYS = {"id", "starting_balance", "price", "currency", "overrides", "name"}


@dataclass(frozen=True)
class Phase:
    id: str
    rules: dict[str, dict[str, Any]]  # effective rules: defaults merged with the phase's own
    name: str = ""
    profit_split_pct: Decimal | None = None
    scaling: dict[str, Any] | None = None
    payout: dict[str, Any] | None = None

    @property
    def is_funded(self) -> bool:
        return "profit_target" not in self.rules


@dataclass(frozen=True)
class Offer:
    id: str
    starting_balance: Decimal
    price: Decimal
    currency: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    name: str = ""


@dataclass(frozen=True)
class Rulebook:
    id: str
    version: int
    name: str
    currency: str
    starting_balance: Decimal
    timezone: str
    day_starts_at: time
    phases: tuple[Phase, ...]
    offers: tuple[Offer, ...] = ()
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def phase(self, phase_id: str | None = None) -> Phase:
        """The phase ``phase_id`` (default: the first)."""
        if phase_id is None:
            return self.phases[0]
        for p in self.phases:
            if p.id == phase_id:
                return p
        raise RulebookError(
            self.id, "phases", f"no phase {phase_id!r} (phases: {', '.join(p.id for p in self.phases)})"
        )

    def next_phase(self, phase_id: str) -> Phase | None:
        ids = [p.id for p in self.phases]
        i = ids.index(phase_id)
        return self.phases[i + 1] if i + 1 < len(self.phases) else None

    def offer(self, offer_id: str) -> Offer:
        for o in self.offers:
            if o.id == offer_id:
                return o
        raise RulebookError(self.id, "offers", f"no offer {offer_id!r}")

    def for_offer(self, offer_id: str) -> Rulebook:
        """This rulebook as an account on ``offer_id`` gets it: its starting balance and overrides applied."""
        offer = self.offer(offer_id)
        src = json.loads(json.dumps(self.source, default=str))
        src["starting_balance"] = str(offer.starting_balance)
        rules = dict(src.get("rules") or {})
        for rid, params in offer.overrides.items():
            merged = dict(rules.get(rid) or {})
            for k in ("pct", "amount"):
                if k in params:
                    merged.pop("pct", None)
                    merged.pop("amount", None)
            merged.update(params)
            rules[rid] = merged
        src["rules"] = rules
        # Overrides also win over a phase's own setting of the same rule.
        for ph in src.get("phases") or []:
            prules = dict(ph.get("rules") or {})
            for rid, params in offer.overrides.items():
                if rid in prules:
                    merged = dict(prules[rid] or {})
                    if "pct" in params or "amount" in params:
                        merged.pop("pct", None)
                        merged.pop("amount", None)
                    merged.update(params)
                    prules[rid] = merged
            ph["rules"] = prules
        src["offers"] = []
        return parse_rulebook(src, where=f"{self.id}@{offer.id}")

    def to_json(self) -> dict[str, Any]:
        """The validated source, JSON-ready: what is frozen onto an account."""
        return json.loads(json.dumps(self.source, default=str))  # type: ignore[no-any-return]

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()

    def with_version(self, version: int) -> Rulebook:
        src = {**self.source, "version": version}
        return replace(self, version=version, source=src)


def _str(v: Any, where: str, key: str, *, max_len: int = 200) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > max_len:
        raise RulebookError(where, key, f"must be a non-empty string of at most {max_len} characters")
    return v


def _rules(raw: Any, where: str, prefix: str) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise RulebookError(where, prefix, "must be an object keyed by rule id")
    return {rid: validate_rule(rid, params, where, prefix) for rid, params in raw.items()}


def _merge(
    defaults: Mapping[str, Any] | None, own: Mapping[str, Any] | None, where: str, prefix: str
) -> dict[str, dict[str, Any]]:
    """Phase rules over book defaults, key by key (a phase setting ``pct`` replaces a default ``amount``)."""
    merged: dict[str, dict[str, Any]] = {}
    for rid, params in (defaults or {}).items():
        merged[rid] = dict(params or {})
    for rid, params in (own or {}).items():
        base = dict(merged.get(rid) or {})
        params = dict(params or {})
        if "pct" in params or "amount" in params:
            base.pop("pct", None)
            base.pop("amount", None)
        if "lock_at" in params or "lock_at_offset" in params:
            base.pop("lock_at", None)
            base.pop("lock_at_offset", None)
        base.update(params)
        merged[rid] = base
    return {rid: validate_rule(rid, p, where, prefix) for rid, p in merged.items()}


def parse_rulebook(data: Any, where: str = "<rulebook>") -> Rulebook:
    """Validate a rulebook/plan mapping; raises ``RulebookError`` (file, key, reason) on the first problem."""
    if not isinstance(data, Mapping):
        raise RulebookError(where, "(root)", "must be an object")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise RulebookError(where, unknown[0], f"unknown key (known: {', '.join(sorted(TOP_KEYS))})")
    rb_id = data.get("id")
    if not isinstance(rb_id, str) or not _ID.match(rb_id):
        raise RulebookError(where, "id", "must be 1-64 characters of a-z, 0-9, '_', '-', '.'")
    version = integer(min_value=1, max_value=1_000_000)(data.get("version", 1), where, "version")
    name = _str(data.get("name", rb_id), where, "name")
    currency = data.get("currency", "USD")
    if not isinstance(currency, str) or not re.match(r"^[A-Z]{3}$", currency):
        raise RulebookError(where, "currency", "must be a 3-letter upper-case currency code")
    if "starting_balance" not in data:
        raise RulebookError(where, "starting_balance", "is required")
    start = dec(positive=True, max_value=Decimal("1e12"))(data["starting_balance"], where, "starting_balance")
    tz = data.get("timezone", "UTC")
    try:
        if not isinstance(tz, str):
            raise ZoneInfoNotFoundError
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise RulebookError(where, "timezone", f"unknown IANA timezone {tz!r}") from None
    dsa = data.get("day_starts_at", "00:00")
    m = re.match(r"^([01]\d|2[0-3]):([0-5]\d)$", dsa) if isinstance(dsa, str) else None
    if m is None:
        raise RulebookError(where, "day_starts_at", "must be a local time HH:MM")
    defaults = _rules(data.get("rules"), where, "rules")
    raw_phases = data.get("phases")
    if not isinstance(raw_phases, list) or not raw_phases:
        raise RulebookError(where, "phases", "must be a non-empty list")
    phases: list[Phase] = []
    seen: set[str] = set()
    for i, ph in enumerate(raw_phases):
        k = f"phases[{i}]"
        if not isinstance(ph, Mapping):
            raise RulebookError(where, k, "must be an object")
        bad = sorted(set(ph) - PHASE_KEYS)
        if bad:
            raise RulebookError(where, f"{k}.{bad[0]}", f"unknown key (known: {', '.join(sorted(PHASE_KEYS))})")
        pid = ph.get("id")
        if not isinstance(pid, str) or not _ID.match(pid):
            raise RulebookError(where, f"{k}.id", "must be an id like phase_1")
        if pid in seen:
            raise RulebookError(where, f"{k}.id", f"duplicate phase id {pid!r}")
        seen.add(pid)
        own = _rules(ph.get("rules"), where, f"{k}.rules")
        rules = _merge(defaults, own, where, f"{k}.rules")
        split = ph.get("profit_split_pct")
        split_d = (
            dec(min_value=Decimal(0), max_value=Decimal(100))(split, where, f"{k}.profit_split_pct")
            if split is not None
            else None
        )
        scaling = ph.get("scaling")
        if scaling is not None:
            if not isinstance(scaling, Mapping) or set(scaling) - {
                "min_profit_pct",
                "increase_pct",
                "every_days",
                "max_balance",
            }:
                raise RulebookError(where, f"{k}.scaling", "must be {min_profit_pct, increase_pct, every_days}")
            scaling = {
                "min_profit_pct": dec(min_value=Decimal(0))(
                    scaling.get("min_profit_pct", 10), where, f"{k}.scaling.min_profit_pct"
                ),
                "increase_pct": dec(positive=True, max_value=Decimal(1000))(
                    scaling.get("increase_pct", 25), where, f"{k}.scaling.increase_pct"
                ),
                "every_days": integer(min_value=1, max_value=3650)(
                    scaling.get("every_days", 120), where, f"{k}.scaling.every_days"
                ),
                **(
                    {"max_balance": dec(positive=True)(scaling["max_balance"], where, f"{k}.scaling.max_balance")}
                    if "max_balance" in scaling
                    else {}
                ),
            }
        payout = ph.get("payout")
        if payout is not None and not isinstance(payout, Mapping):
            raise RulebookError(where, f"{k}.payout", "must be an object")
        phases.append(
            Phase(
                pid, rules, str(ph.get("name") or pid), split_d, scaling, dict(payout) if payout is not None else None
            )
        )
    offers: list[Offer] = []
    raw_offers = data.get("offers") or []
    if not isinstance(raw_offers, list):
        raise RulebookError(where, "offers", "must be a list")
    for i, o in enumerate(raw_offers):
        k = f"offers[{i}]"
        if not isinstance(o, Mapping):
            raise RulebookError(where, k, "must be an object")
        bad = sorted(set(o) - OFFER_KEYS)
        if bad:
            raise RulebookError(where, f"{k}.{bad[0]}", f"unknown key (known: {', '.join(sorted(OFFER_KEYS))})")
        oid = o.get("id")
        if not isinstance(oid, str) or not _ID.match(oid):
            raise RulebookError(where, f"{k}.id", "must be an id like 100k")
        if any(x.id == oid for x in offers):
            raise RulebookError(where, f"{k}.id", f"duplicate offer id {oid!r}")
        sb = dec(positive=True, max_value=Decimal("1e12"))(o.get("starting_balance"), where, f"{k}.starting_balance")
        price = dec(min_value=Decimal(0))(o.get("price"), where, f"{k}.price")
        overrides = o.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise RulebookError(where, f"{k}.overrides", "must be an object keyed by rule id")
        for rid, params in overrides.items():
            if rid not in RULES:
                raise RulebookError(where, f"{k}.overrides.{rid}", "unknown rule")
            if not isinstance(params, Mapping):
                raise RulebookError(where, f"{k}.overrides.{rid}", "must be an object of parameters")
        offers.append(
            Offer(
                oid,
                sb,
                price,
                str(o.get("currency", currency)),
                {r: dict(p) for r, p in overrides.items()},
                str(o.get("name") or oid),
            )
        )
    book = Rulebook(
        rb_id,
        version,
        name,
        currency,
        start,
        tz,
        time(int(m.group(1)), int(m.group(2))),
        tuple(phases),
        tuple(offers),
        str(data.get("description", "")),
        json.loads(json.dumps(dict(data), default=str)),
    )
    for o in offers:  # every offer must produce a valid rulebook
        book.for_offer(o.id)
    return book
