"""The layers of ARCHITECTURE.md, enforced: core imports no web, SQL or socket library, and
dialects never reach into storage or each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "taskfleet"
CORE_FORBIDDEN = {
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "websockets",
    "httpx",
    "socket",
    "ssl",
    "http",
    "taskfleet.store",
    "taskfleet.api",
    "taskfleet.bus",
    "taskfleet.dialects",
    "taskfleet.agent",
    "taskfleet.web",
}


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def violations(path: Path, forbidden: set[str]) -> list[str]:
    return sorted(
        name
        for name in imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("path", sorted(SRC.glob("core/**/*.py")), ids=lambda p: p.name)
def test_core_imports_no_transport_or_storage(path: Path) -> None:
    assert violations(path, CORE_FORBIDDEN) == []


def test_dialects_stay_translations() -> None:
    root = SRC / "dialects"
    modules = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    packages = {p.name for p in root.iterdir() if (p / "__init__.py").exists()}
    for path in sorted(root.glob("**/*.py")):
        own = path.relative_to(root).parts[0].removesuffix(".py")  # a module or a package
        others = {f"taskfleet.dialects.{name}" for name in (modules | packages) - {own}}
        assert violations(path, {"taskfleet.store", "sqlalchemy", *others}) == [], path


def test_the_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sqlalchemy import select\nimport taskfleet.core.errors\n")
    assert violations(bad, CORE_FORBIDDEN) == ["sqlalchemy"]
