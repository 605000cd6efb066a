"""The risk engine: the vectorized book of every live account (``book.RiskBook``)."""
