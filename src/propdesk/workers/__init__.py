"""Background workers: loops that run beside the API (in a thread) or on their own (``propdesk worker ...``).

- ``mark_to_market.MarkToMarketWorker``: reprices open positions on a cadence and writes a heartbeat.
"""
