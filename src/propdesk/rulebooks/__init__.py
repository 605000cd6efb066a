"""Rulebook and plan files: loading (YAML or JSON), the shipped presets, and validation at the file edge."""

from __future__ import annotations

import functools
import json
from importlib import resources
from pathlib import Path
from typing import Any

from ..domain.rules.rulebook import Rulebook, parse_rulebook
from ..domain.rules.schema import RulebookError

__all__ = ["RulebookError", "load_file", "load_rulebook", "parse_text", "preset_ids", "presets"]


def parse_text(text: str, where: str) -> Rulebook:
    """Parse YAML or JSON text into a validated rulebook (errors name ``where``, the key and the reason)."""
    data: Any
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RulebookError(where, f"line {exc.lineno}", f"invalid JSON: {exc.msg}") from None
    else:
        import yaml

        # libyaml's C loader when the wheel has it (it does on the supported platforms): about ten times faster.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader, C or pure Python
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f"line {mark.line + 1}" if mark is not None else "(file)"
            raise RulebookError(where, line, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_rulebook(data, where)


def load_file(path: Path) -> Rulebook:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulebookError(str(path), "(file)", f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RulebookError(str(path), "(file)", "is not UTF-8 text") from None
    return parse_text(text, str(path))


def _preset_files() -> dict[str, Any]:
    base = resources.files("propdesk.rulebooks") / "presets"
    return {p.name.rsplit(".", 1)[0]: p for p in base.iterdir() if p.name.endswith((".yaml", ".yml", ".json"))}


def preset_ids() -> list[str]:
    return sorted(_preset_files())


def presets() -> list[Rulebook]:
    """Every shipped preset plan, validated."""
    return list(_parsed_presets())


@functools.cache
def _parsed_presets() -> tuple[Rulebook, ...]:
    # The shipped files cannot change while the process runs, and rulebooks are immutable: parse them once.
    return tuple(
        parse_text(f.read_text(encoding="utf-8"), f"preset:{pid}") for pid, f in sorted(_preset_files().items())
    )


def load_rulebook(ref: str) -> Rulebook:
    """A rulebook from a file path, or a shipped preset by id (optionally ``id@offer`` for an offer's book)."""
    offer = None
    if "@" in ref and not Path(ref).exists():
        ref, offer = ref.split("@", 1)
    path = Path(ref)
    files = _preset_files()
    if path.exists():
        book = load_file(path)
    elif ref in files:
        book = parse_text(files[ref].read_text(encoding="utf-8"), f"preset:{ref}")
    else:
        raise RulebookError(ref, "(file)", f"no such file or preset (presets: {', '.join(sorted(files))})")
    return book.for_offer(offer) if offer else book
