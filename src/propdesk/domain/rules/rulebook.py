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

from .schema import RULES, RulebookError, dec, integer, validate_partial, validate_rule

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
        """This rulebook as an account on ``offer_id`` gets it: its starting balance and overrides applied.

        An override changes the rule wherever the plan sets it: in the defaults and in every phase that sets it
        itself. A rule only some phases set stays in those phases (a 100k profit target must not give the funded
        phase a target); a rule the plan does not set at all is added to the defaults.
        """
        offer = self.offer(offer_id)
        src = json.loads(json.dumps(self.source, default=str))
        src["starting_balance"] = str(offer.starting_balance)
        rules = dict(src.get("rules") or {})
        phases = src.get("phases") or []
        for rid, params in offer.overrides.items():
            in_phases = [ph for ph in phases if rid in (ph.get("rules") or {})]
            if rid in rules or not in_phases:
                rules[rid] = _override(rules.get(rid), params)
            for ph in in_phases:
                ph["rules"] = {**ph["rules"], rid: _override(ph["rules"][rid], params)}
        src["rules"] = rules
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


def _override(base: Mapping[str, Any] | None, params: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``params`` over it; setting ``pct``/``amount`` (or a lock) replaces its alternative."""
    merged = dict(base or {})
    for group in (("pct", "amount"), ("lock_at", "lock_at_offset")):
        if any(k in params for k in group):
            for k in group:
                merged.pop(k, None)
    merged.update(params)
    return merged


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
        merged[rid] = _override(merged.get(rid), params or {})
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
        # A phase may set only some keys of a default rule (e.g. ``max_daily_loss: {action: pause_day}``):
        # its own keys are checked here, the merged rule as a whole by ``_merge``.
        own_raw = ph.get("rules")
        if own_raw is not None and not isinstance(own_raw, Mapping):
            raise RulebookError(where, f"{k}.rules", "must be an object keyed by rule id")
        own = {rid: validate_partial(rid, p, where, f"{k}.rules") for rid, p in (own_raw or {}).items()}
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
            validate_partial(rid, params, where, f"{k}.overrides")
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
    for i, o in enumerate(offers):  # every offer must produce a valid rulebook; errors name this file
        try:
            book.for_offer(o.id)
        except RulebookError as exc:
            raise RulebookError(
                where, f"offers[{i}].overrides", f"gives an invalid rule: {exc.key}: {exc.reason}"
            ) from None
    return book
