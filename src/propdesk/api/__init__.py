"""The HTTP API: FastAPI routers, errors, idempotency, middleware.

The application is assembled by ``propdesk.web.app.create_app``.
"""
