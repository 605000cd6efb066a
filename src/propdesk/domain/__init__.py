"""The pure core of PropDesk.

Everything in this package is a pure function or an immutable value over plain data: money, instruments,
quotes, the account lifecycle state machine, execution policy, order/position math, the fill simulator, the
safety gates and ledger entries. It imports only the standard library and itself (an import-linter contract
enforces this), reads no clock (time arrives inside events) and performs no I/O.
"""
