"""The test harness's guard around ``ast.parse`` (see ``tests/conftest.py``): it retries only CPython 3.11's
spurious recursion-depth mismatch, and only a bounded number of times."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from tests.conftest import _parse_despite_the_shared_ast_depth_counter


class FlakyParse:
    def __init__(self, failures: int, message: str = "AST constructor recursion depth mismatch (before=1, after=2)"):
        self.failures, self.message, self.calls = failures, message, 0

    def __call__(self, source: str, *args: Any, **kwargs: Any) -> ast.AST:
        self.calls += 1
        if self.calls <= self.failures:
            raise SystemError(self.message)
        return ast.parse(source, *args, **kwargs)


def test_the_guard_is_installed_for_the_whole_run() -> None:
    assert ast.parse.__name__ == "parse_again_on_the_spurious_mismatch"


def test_a_spurious_depth_mismatch_is_parsed_again_to_the_same_tree() -> None:
    flaky = FlakyParse(failures=2)
    tree = _parse_despite_the_shared_ast_depth_counter(flaky)("x = 1 + 2")
    assert flaky.calls == 3 and ast.dump(tree) == ast.dump(ast.parse("x = 1 + 2"))


def test_a_mismatch_that_keeps_happening_is_raised_after_five_tries() -> None:
    flaky = FlakyParse(failures=99)
    with pytest.raises(SystemError, match="recursion depth mismatch"):
        _parse_despite_the_shared_ast_depth_counter(flaky)("x = 1")
    assert flaky.calls == 5


@pytest.mark.parametrize("error", [SystemError("some other interpreter error"), SyntaxError("bad")])
def test_any_other_error_is_raised_at_once(error: Exception) -> None:
    calls: list[str] = []

    def broken(source: str) -> ast.AST:
        calls.append(source)
        raise error

    with pytest.raises(type(error)):
        _parse_despite_the_shared_ast_depth_counter(broken)("x = (")
    assert calls == ["x = ("]
