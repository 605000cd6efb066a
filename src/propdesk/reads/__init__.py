"""Read models for traders and the desk: queries only (app role under RLS, or the engine pool for the panel)."""
