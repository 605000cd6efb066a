"""The public landing page, the layout every page shares, and the static pipeline's serving rules."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


@pytest.fixture
def platform(db_url: str, clock: Any) -> Iterator[Any]:
    from propdesk.bootstrap import open_platform
    from propdesk.settings import Settings

    settings = Settings(
        database_url=db_url, db_role_prefix="pdtest", service_token="svc_pages_token_0123456789", db_pool_size=4
    )
    p = open_platform(settings, clock=clock, migrate=False, admin_url=db_url, configure_logs=False)
    yield p
    p.close()


@pytest.fixture
def anon(platform: Any) -> Iterator[TestClient]:
    from propdesk.web.app import create_app

    with TestClient(create_app(platform)) as c:
        yield c


def test_landing_lists_every_active_plan_with_sizes_prices_and_rules_in_words(anon: TestClient, platform: Any) -> None:
    r = anon.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    for plan in platform.plans.catalogue():
        assert plan["name"] in html
    assert "Classic 2-Step" in html
    assert "10,000" in html and "99 USD" in html  # a size and its price
    assert "Daily loss limit 5%" in html and "Maximum loss 10%" in html and "Profit target 10%" in html
    assert 'href="/signup' in html and 'href="/login"' in html


def test_pages_carry_no_inline_script_or_style(anon: TestClient) -> None:
    html = anon.get("/").text
    assert " style=" not in html
    assert "<style" not in html
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers


def test_static_files_are_served_with_versioned_urls_and_long_cache_for_vendor_files(anon: TestClient) -> None:
    html = anon.get("/").text
    css = re.search(r'href="(/static/app\.css\?v=[0-9a-f]{12})"', html)
    assert css, "the stylesheet is linked with a content hash"
    r = anon.get(css.group(1))
    assert r.status_code == 200 and "immutable" in r.headers["cache-control"]
    assert anon.get("/static/app.css").headers["cache-control"] == "no-cache"
    vendor = anon.get("/static/vendor/htmx.min.js")
    if vendor.status_code == 200:
        assert "immutable" in vendor.headers["cache-control"]
    assert anon.get("/static/../pages.py").status_code == 404


def test_missing_vendor_files_show_a_banner_instead_of_breaking_the_page(
    anon: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from propdesk.web import assets

    monkeypatch.setattr(assets, "VENDOR_DIR", assets.VENDOR_DIR / "nonexistent")
    r = anon.get("/")
    assert r.status_code == 200
    assert 'id="assets-missing"' in r.text and "./start" in r.text


def test_rules_in_words_names_unknown_rule_kinds_instead_of_hiding_them() -> None:
    from propdesk.web.pages import rules_in_words

    words = rules_in_words({"max_loss": {"pct": "8", "mode": "trailing"}, "weekend_holding": {"allowed": False}})
    assert "Maximum loss 8% trailing the highest equity" in words
    assert any("weekend holding" in w for w in words)


def test_money_formatting_is_exact_decimal() -> None:
    from decimal import Decimal

    from propdesk.web.pages import fmt_money

    assert fmt_money(Decimal("1234.005")) == "1,234.01"
    assert fmt_money("-0.5", signed=True) == "-0.50"
    assert fmt_money("12", signed=True) == "+12.00"
    assert fmt_money(None) == "—"
