"""In-process fakes of external services (real servers on loopback ports)."""
