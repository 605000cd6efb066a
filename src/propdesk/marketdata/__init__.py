"""Market data: the quote store and (later) providers, routing, candles and the calendar."""
