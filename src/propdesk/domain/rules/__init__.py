"""The rules engine: rulebooks as data and rules as pure functions over (parameters, state, event).

- ``schema``: every rule id, its parameter keys, types and defaults; validation with precise errors.
- ``rulebook``: rulebook/plan files (rulebook + offers), phases, effective parameters per phase and offer.
- ``calendar``: trading days in the rulebook's timezone (DST days are 23 or 25 hours long).
- ``engine``: the evaluator state machine (limits, progress, consistency, time limits, detectors, warnings).
- ``pretrade``: checks an order must pass before it executes (or, offline, flags for trades that broke them).
"""
