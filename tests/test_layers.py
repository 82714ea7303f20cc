"""The house's layers: the CLI above the exporter and the auditor, both above the core.

pg_architect.cli / pg_architect.demo / pg_architect.__main__  ->  may import anything of ours
pg_architect.exporter  ->  core only (never the auditor)
pg_architect.auditor   ->  core only (never the exporter)
pg_architect.core      ->  nothing of ours above it
Nobody imports the top-level folders ``exporter`` or ``auditor`` by those names: the installed wheel has
only ``pg_architect``. Lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Which layers each layer may import (besides itself).
ALLOWED = {
    "top": {"top", "core", "exporter", "auditor"},
    "exporter": {"exporter", "core"},
    "auditor": {"auditor", "core"},
    "core": {"core"},
}


def layer_of(module: str) -> str | None:
    """The layer of a pg_architect module name; None for modules outside the package."""
    parts = module.split(".")
    if parts[0] in ("exporter", "auditor"):
        return "bare"  # the top-level folders' own names: never importable from an installed wheel
    if parts[0] != "pg_architect":
        return None
    if len(parts) == 1 or parts[1] in ("cli", "demo", "__main__"):
        return "top"
    return parts[1] if parts[1] in ("core", "exporter", "auditor") else "top"


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under ``root`` (a repository checkout), by its import name."""
    found: dict[str, Path] = {}
    package = root / "pg_architect"
    paths = [Path(d) / f for d, _, files in os.walk(package, followlinks=True) for f in files if f.endswith(".py")]
    for path in sorted(paths):
        relative = path.relative_to(root).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.append((node.lineno, base))
            # "from pg_architect import exporter" imports the layer itself
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if base == "pg_architect"]
    return out


def violations(root: Path) -> list[str]:
    problems: list[str] = []
    for module, path in modules(root).items():
        own = layer_of(module)
        assert own is not None and own != "bare", module
        for line, target in imported(module, path):
            other = layer_of(target)
            if other is None:
                continue
            if other == "bare":
                problems.append(f"{path.relative_to(root)}:{line}: imports {target!r}; use pg_architect.{target}")
            elif other not in ALLOWED[own]:
                problems.append(f"{path.relative_to(root)}:{line}: the {own} layer imports {target} ({other})")
    return problems


def test_the_layers_hold() -> None:
    assert violations(REPO) == []


def test_the_package_links_point_at_the_top_level_folders() -> None:
    for name in ("exporter", "auditor"):
        link = REPO / "pg_architect" / name
        assert link.is_symlink() and link.resolve() == (REPO / name).resolve(), link


@pytest.mark.parametrize(
    ("file", "line", "expected"),
    [
        ("exporter/collectors.py", "from pg_architect.auditor import kb", "the exporter layer imports"),
        ("auditor/audit.py", "from pg_architect.exporter.latency import Mixture", "the auditor layer imports"),
        ("pg_architect/core/db.py", "    from pg_architect.auditor import kb", "the core layer imports"),
        ("pg_architect/core/config.py", "import pg_architect.cli", "the core layer imports"),
        ("auditor/kb.py", "from exporter import models", "use pg_architect.exporter"),
    ],
)
def test_the_check_fails_when_a_forbidden_import_is_added(tmp_path: Path, file: str, line: str, expected: str) -> None:
    copy = tmp_path / "repo"
    for name in ("exporter", "auditor", "pg_architect"):
        shutil.copytree(REPO / name, copy / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / file
    # Inside a function, the way lazy imports are written: they count too.
    target.write_text(target.read_text(encoding="utf-8") + f"\n\ndef _added() -> None:\n    {line.strip()}\n")
    found = violations(copy)
    assert any(expected in problem and file in problem for problem in found), found


def test_the_wheel_installs_only_pg_architect(tmp_path: Path) -> None:
    """Built as users install it: one top-level package, with its SQL files; ``import exporter`` fails."""
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = out.glob("pg_architect-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"pg_architect"}, top
    for required in (
        "pg_architect/exporter/queries/server.sql",
        "pg_architect/auditor/migrations/001_init.sql",
        "pg_architect/core/queries/pgss_statements_post_11100.sql",
        "pg_architect/py.typed",
    ):
        assert required in names, required
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next((venv / "lib").glob("python3*/site-packages"))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    probe = (
        "import importlib.util as u, sys; "
        "print(u.find_spec('exporter') is None and u.find_spec('auditor') is None "
        "and u.find_spec('pg_architect.exporter.collectors') is not None)"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-I", "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert result.stdout.strip() == "True", result.stdout + result.stderr
