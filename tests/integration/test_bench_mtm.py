"""``bench mtm`` at a tiny size: the result is correct (never a timing assertion)."""

from __future__ import annotations

import pytest

from propdesk.bench.mtm import run
from propdesk.settings import Settings

pytestmark = pytest.mark.integration


def test_bench_mtm_tiny_is_correct(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_role_prefix="pdtest")
    res = run(settings, accounts=60, positions_per_account=3, trials=2, templates=8)
    assert res.correct, res.problems
    assert res.metrics["accounts_marked"] == 60 and res.params["positions"] >= 60
