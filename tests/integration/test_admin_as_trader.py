"""Defect 4 (issue 13): the trader pages, the trader JSON API and the live stream are the OWNER's only (404 for
anyone else, admins included: one rule, ``reads.access.owned_conn``); an admin sees a trader's dashboard and
journal on the read-only ``/admin/accounts/{id}/as-trader`` page, and every view is audited."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from tests.integration.test_pages_trader import as_user, new_account
from tests.web_kit import make_user

from propdesk.domain.orders import OrderRequest, OrderType, Side
from propdesk.domain.quotes import Quote
from propdesk.identity.users import UserRole

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, follow_redirects=False) as c:
        yield c


def _trader_with_exposure(platform: Any) -> tuple[Any, uuid.UUID]:
    trader = make_user(platform, "owner@example.test")
    account = new_account(platform, trader)
    platform.quotes.put(Quote("EURUSD", Decimal("1.10000"), Decimal("1.10010"), platform.clock.now()))
    out = platform.execution.submit_order(account, OrderRequest("EURUSD", Side.BUY, Decimal("0.03")))
    assert out.rejection is None
    rest = OrderRequest("EURUSD", Side.BUY, Decimal("0.01"), OrderType.LIMIT, limit_price=Decimal("1.05000"))
    assert platform.execution.submit_order(account, rest).rejection is None
    return trader, account


def _audit_rows(platform: Any, account: uuid.UUID) -> list[dict[str, Any]]:
    with platform.db.read() as c:
        return list(
            c.execute(
                "SELECT actor, action, reason, details FROM admin_audit WHERE account_id=%s AND action='view_as_trader'"
                " ORDER BY id",
                (account,),
            ).fetchall()
        )


def test_an_admin_gets_404_from_the_trader_pages_and_api_of_another_traders_account(
    client: TestClient, platform: Any
) -> None:
    trader, account = _trader_with_exposure(platform)
    admin = make_user(platform, "boss@example.test", UserRole.ADMIN)
    as_user(client, platform, admin)
    for path in (f"/app/accounts/{account}", f"/app/accounts/{account}/journal"):
        r = client.get(path)
        assert r.status_code == 404, path
        assert str(account) not in r.text
    for path in (
        f"/api/v1/accounts/{account}",
        f"/api/v1/accounts/{account}/journal",
        f"/api/v1/stream/accounts/{account}",
    ):
        r = client.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "account_not_found", path
    # The owner still sees everything.
    as_user(client, platform, trader)
    assert client.get(f"/app/accounts/{account}").status_code == 200
    assert client.get(f"/app/accounts/{account}/journal").status_code == 200


def test_the_as_trader_page_renders_the_dashboard_and_journal_read_only_and_audits_each_view(
    client: TestClient, platform: Any
) -> None:
    _, account = _trader_with_exposure(platform)
    admin = make_user(platform, "boss@example.test", UserRole.ADMIN)
    as_user(client, platform, admin)
    page = client.get(f"/admin/accounts/{account}")
    assert f'href="/admin/accounts/{account}/as-trader"' in page.text
    r = client.get(f"/admin/accounts/{account}/as-trader")
    assert r.status_code == 200
    html = r.text
    assert 'id="as-trader"' in html and 'data-status="active"' in html
    assert 'data-symbol="EURUSD"' in html and 'id="orders-table"' in html and 'id="journal-table"' in html
    # Read-only: no ticket, no order or position controls, no note editing.
    for control in ('id="ticket"', 'data-action="cancel"', 'data-action="close"', "note-form"):
        assert control not in html, control
    rows = _audit_rows(platform, account)
    assert len(rows) == 1 and rows[0]["actor"] == f"user:{admin.id}"
    assert rows[0]["details"]["views"] == ["dashboard", "journal"]
    client.get(f"/admin/accounts/{account}/as-trader")
    assert len(_audit_rows(platform, account)) == 2


def test_the_as_trader_page_is_for_admins_only_and_404_for_a_missing_account(client: TestClient, platform: Any) -> None:
    trader, account = _trader_with_exposure(platform)
    as_user(client, platform, trader)
    assert client.get(f"/admin/accounts/{account}/as-trader").status_code == 403
    admin = make_user(platform, "boss@example.test", UserRole.ADMIN)
    as_user(client, platform, admin)
    assert client.get(f"/admin/accounts/{uuid.uuid4()}/as-trader").status_code == 404
    assert _audit_rows(platform, account) == []
