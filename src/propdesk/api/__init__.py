"""The HTTP API (FastAPI): ``propdesk.api.app.create_app(platform)``."""
