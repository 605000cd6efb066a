"""Acting as a web user in tests without the login form.

    user = make_user(platform, "a@example.com")                      # a trader
    boss = make_user(platform, "boss@example.com", role=UserRole.ADMIN)
    client.cookies.update(login_cookie(platform, user))              # a live session for that user
    client.post(url, json=..., headers=csrf_headers(platform))       # unsafe methods need the trusted Origin
    secret = enroll_totp(platform, boss)                             # TOTP on for that user (as the CLI does)
    totp_code(secret, clock)                                         # the code an authenticator shows now

``login_cookie`` starts a real session in the database (the same path the login route takes), so idle and
absolute timeouts, logout and revocation behave as in production. Passwords of users made here are
``PASSWORD`` unless given.
"""

from __future__ import annotations

from typing import Any

from propdesk.identity.users import UserRole, WebUser
from propdesk.web.security import origin_of

PASSWORD = "Correct-Horse-42"
SERVICE_TOKEN = "svc_web_token_0123456789abcdef"
ADMIN_TOKEN = "adm_web_token_0123456789abcdef"


def open_test_platform(db_url: str, clock: Any, **overrides: Any) -> Any:
    """A Platform over a test database (the conftest's ``db_url``), with static service/admin tokens."""
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    values: dict[str, Any] = {
        "database_url": db_url,
        "db_role_prefix": "pdtest",
        "service_token": SERVICE_TOKEN,
        "admin_token": ADMIN_TOKEN,
        "db_pool_size": 6,
    }
    values.update(overrides)
    return open_platform(Settings(**values), clock=clock, migrate=False, admin_url=db_url, configure_logs=False)


def make_user(
    platform: Any,
    email: str,
    role: UserRole | str = UserRole.TRADER,
    *,
    password: str = PASSWORD,
    display_name: str = "",
    timezone: str = "UTC",
) -> WebUser:
    """Create a user directly in the identity store."""
    user: WebUser = platform.identity.create_user(
        email, password, role=UserRole(role), display_name=display_name, timezone=timezone
    )
    return user


def login_cookie(platform: Any, user: WebUser) -> dict[str, str]:
    """A cookie jar entry ``{cookie name: session token}`` of a fresh session of ``user``."""
    token = platform.identity.start_session(user, ip="127.0.0.1", user_agent="web_kit")
    return {platform.identity.cookie_name: token}


def csrf_headers(platform: Any) -> dict[str, str]:
    """The ``Origin`` header a same-site browser sends (what the CSRF check wants on unsafe methods)."""
    return {"Origin": origin_of(platform.settings.public_url)}


def login(client: Any, platform: Any, user: WebUser) -> Any:
    """Put a fresh session of ``user`` in ``client``'s cookie jar; returns the client."""
    client.cookies.update(login_cookie(platform, user))
    return client


def web_client(platform: Any, **kwargs: Any) -> Any:
    """A starlette TestClient over ``create_app(platform)`` (use it as a context manager)."""
    import warnings

    from propdesk.web.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(create_app(platform), **kwargs)


def enroll_totp(platform: Any, user: WebUser) -> str:
    """Turn TOTP on for ``user`` at once (``propdesk admin totp``'s path); returns the base32 secret."""
    secret: str = platform.identity.enroll_totp_directly(user.id, actor="test").secret
    return secret


def totp_code(secret: str, clock: Any, steps: int = 0) -> str:
    """The code an authenticator shows for ``secret`` at ``clock.now()``, ``steps`` 30-second steps away."""
    from propdesk.identity import totp

    return totp.code_at(secret, clock.now().timestamp() + 30 * steps)
