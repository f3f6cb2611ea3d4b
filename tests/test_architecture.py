"""docs/architecture.md's import table against the code's real imports (read with ast, nothing imported).

Each row's last column lists the co2cli modules the module imports at run time: at module level first, then
after `lazily:` those imported inside functions (imports only for type checkers are not listed). A row for every
module, a module for every row.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "co2cli"
DOC = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    """co2cli/cli/app.py -> 'cli.app'; a package's __init__ is the package ('cli'; the top one is 'co2cli')."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "co2cli"


def module_path(module: str) -> Path:
    if module == "co2cli":
        return PACKAGE / "__init__.py"
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def all_modules() -> set[str]:
    return {module_name(p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}


def _target(base: str, name: str) -> str:
    """What `from co2cli.<base> import <name>` imports: a submodule when <base>/<name>.py exists, else <base>."""
    folder = PACKAGE.joinpath(*base.split(".")) if base else PACKAGE
    if (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file():
        return f"{base}.{name}" if base else name
    return base or "co2cli"  # the package's __init__ itself


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                lines.update(range(inner.lineno, (inner.end_lineno or inner.lineno) + 1))
    return lines


def real_imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules imported at module level, modules imported only inside functions) of one file."""
    tree = ast.parse(path.read_text())
    hidden = _type_checking_lines(tree)
    top_level = {id(node) for node in tree.body}
    top: set[str] = set()
    lazy: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in hidden:
            continue
        found: set[str] = set()
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                (node.module == "co2cli" or node.module.startswith("co2cli.")):
            base = node.module.removeprefix("co2cli").lstrip(".")
            found = {_target(base, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found = {a.name.removeprefix("co2cli.") for a in node.names if a.name.startswith("co2cli.")}
        (top if id(node) in top_level else lazy).update(found)
    me = module_name(path)
    return top - {me}, lazy - top - {me}


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """Module -> (module-level imports, lazy imports) from the table's rows."""
    rows: dict[str, tuple[set[str], set[str]]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`([\w.]+)`\s*\|.*\|\s*([^|]*)\|\s*$", line)
        if not match:
            continue
        eager, _, lazily = match.group(2).partition("lazily:")

        def names(text: str) -> set[str]:
            return {n.strip().strip("`") for n in text.replace(";", ",").split(",") if n.strip() not in ("", "-")}

        rows[match.group(1)] = (names(eager), names(lazily))
    return rows


def test_every_module_has_one_row() -> None:
    assert set(documented()) == all_modules()


@pytest.mark.parametrize("module", sorted(all_modules()))
def test_import_row_matches_the_code(module: str) -> None:
    assert documented()[module] == real_imports(module_path(module)), f"docs/architecture.md, row `{module}`"


def test_imports_point_one_way() -> None:
    """No module imports the package's __init__ (the only way back up), at module level or lazily."""
    for module in all_modules():
        top, lazy = real_imports(module_path(module))
        assert "co2cli" not in top | lazy, module
