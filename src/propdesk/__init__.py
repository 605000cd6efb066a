"""PropDesk: a proprietary-trading firm's challenge platform."""

__version__ = "0.1.0"
