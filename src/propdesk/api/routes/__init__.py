"""Routers, one module per resource; each exposes ``build(api) -> APIRouter``."""
