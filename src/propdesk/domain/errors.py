"""The exception tree of the core.

    DomainError                 a command cannot be carried out (maps to a 4xx at the edges)
     ├── InvalidInput           malformed or out-of-range input (422)
     ├── NotFound               an entity does not exist (404)
     ├── Conflict               the command conflicts with current state (409)
     │    └── IllegalTransition a lifecycle move not in the transition table
     └── Rejected               a gate refused an order; carries the rejection as data

Rejections are normally returned as data (see ``gates.Rejection``); ``Rejected`` exists for the places where a
command must abort its transaction with the reason attached.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base class: a command cannot be carried out. ``code`` is stable and machine-readable."""

    code = "domain_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details or {}


class InvalidInput(DomainError):
    code = "invalid_input"
    http_status = 422


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    code = "illegal_transition"


class Rejected(DomainError):
    code = "rejected"
    http_status = 422
