"""The package's tiers import downwards only.

Tiers, lowest first: io, config, layers, models, backends, app (zoo, rewindow, preprocess, superres,
pipeline, loading, export, runtime), train, cli. A module may import its own tier and the tiers below
it; the package root `swinv2/__init__.py` may import anything (and so sits above every tier: importing it from a tier is
importing everything). Every import counts, at module level or inside a function or class, including
`importlib.import_module("swinv2...")` with a literal name; imports under `if TYPE_CHECKING:` are
annotations only and are allowed anywhere.

The two rules that matter most are spelled out with their own message: `layers` (generic pieces) imports
nothing of swinv2 but io, config and layers, and `models` (the reference arithmetic) never imports
`swinv2.backends` (the fast paths plug in through `swinv2.models.registry`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "swinv2"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

TIERS: list[tuple[str, frozenset[str]]] = [  # (tier, the first name after `swinv2.` of its modules)
    ("io", frozenset({"io"})),
    ("config", frozenset({"config"})),
    ("layers", frozenset({"layers"})),
    ("models", frozenset({"models"})),
    ("backends", frozenset({"backends"})),
    (
        "app",
        frozenset({"zoo", "rewindow", "preprocess", "superres", "pipeline", "loading", "export", "runtime", "plan"}),
    ),
    ("train", frozenset({"train"})),
    ("cli", frozenset({"cli", "__main__"})),  # `python -m swinv2` is the command line
]
ROOT = "package root"  # `swinv2` itself, above every tier
RANK = {name: rank for rank, (name, _) in enumerate(TIERS)} | {ROOT: len(TIERS)}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    statement: str
    module: str
    target: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: `{self.statement}` in {self.module} imports {self.target}: {self.rule}"


def tier_of(module: str) -> str | None:
    """The tier of a dotted swinv2 module name; `ROOT` for `swinv2` itself, None for a name in no tier."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        raise ValueError(f"{module} is not in {PACKAGE}")
    if len(parts) == 1:
        return ROOT
    for name, heads in TIERS:
        if parts[1] in heads:
            return name
    return None


def module_name(path: Path, source_root: Path) -> tuple[str, bool]:
    """(dotted name, is a package `__init__`) of a file under `source_root` (the folder of `swinv2/`)."""
    parts = list(path.relative_to(source_root).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts = parts[:-1]
    return ".".join(parts), is_package


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.AST]:
    """Every import statement and literal `import_module`/`__import__` call, outside `if TYPE_CHECKING:`
    bodies, at any depth (functions, classes, conditionals, try blocks)."""
    found: list[ast.AST] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:  # the `else:` of a TYPE_CHECKING test runs
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if (
                name in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The swinv2 modules an import statement reaches (relative imports resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.Call):
        return [node.args[0].value]  # type: ignore[attr-defined]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    # `from swinv2.x import y` reaches swinv2.x.y when that is a module, else swinv2.x itself
    return [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in known else origin for alias in node.names]


def check_module(
    source: str, module: str, is_package: bool, path: str, known: set[str], root: bool = False
) -> list[Violation]:
    """The layering violations of one module's source."""
    if root:
        return []  # the package root may import anything
    own = tier_of(module)
    tree = ast.parse(source, filename=path)
    violations = []
    for node in _imports(tree):
        statement = ast.get_source_segment(source, node) or ast.dump(node)
        line = node.lineno  # type: ignore[attr-defined]
        for target in _targets(node, module, is_package, known):
            if target.split(".")[0] != PACKAGE:
                continue
            rule = _broken_rule(own, tier_of(target), module, target)
            if rule:
                violations.append(Violation(path, line, " ".join(statement.split()), module, target, rule))
    return violations


def _broken_rule(own: str | None, theirs: str | None, module: str, target: str) -> str | None:
    if own is None:
        return f"rule: every module belongs to a tier ({module} is in none; add it to TIERS)"
    if theirs is None:
        return f"rule: every module belongs to a tier ({target} is in none; add it to TIERS)"
    if own == "layers" and theirs not in ("io", "config", "layers"):
        return f"rule: layers imports nothing from swinv2 except io, config and layers (target tier: {theirs})"
    if own == "models" and theirs == "backends":
        return "rule: models must not import swinv2.backends (fast paths plug in through swinv2.models.registry)"
    if RANK[theirs] > RANK[own]:
        order = " < ".join(name for name, _ in TIERS)
        return (
            f"rule: a module imports only its own tier or lower ones ({own} may not import {theirs}; "
            f"tiers: {order} < {ROOT})"
        )
    return None


def package_violations(source_root: Path) -> list[Violation]:
    """Every violation in the package under `source_root/swinv2`."""
    files = sorted((source_root / PACKAGE).rglob("*.py"))
    names = {path: module_name(path, source_root) for path in files}
    known = {name for name, _ in names.values()}
    violations = []
    for path, (name, is_package) in names.items():
        shown = str(path.relative_to(source_root.parent)) if source_root.parent in path.parents else str(path)
        violations += check_module(path.read_text(), name, is_package, shown, known, root=name == PACKAGE)
    return violations


def test_every_module_imports_downwards_only() -> None:
    assert (SOURCE / "__init__.py").is_file(), SOURCE
    violations = package_violations(SOURCE.parent)
    assert not violations, "layering violations:\n" + "\n".join(str(v) for v in violations)


def test_every_module_is_in_a_tier() -> None:
    for path in sorted(SOURCE.rglob("*.py")):
        name, _ = module_name(path, SOURCE.parent)
        assert tier_of(name) is not None, f"{path}: {name} belongs to no tier; add it to TIERS in {__file__}"


# ------------------------------------------------------------------ the checker catches what it must
KNOWN = {
    "swinv2",
    "swinv2.config",
    "swinv2.io",
    "swinv2.io.files",
    "swinv2.layers",
    "swinv2.layers.windows",
    "swinv2.models",
    "swinv2.models.swinv2",
    "swinv2.models.registry",
    "swinv2.backends",
    "swinv2.backends.mlp",
    "swinv2.zoo",
    "swinv2.cli",
    "swinv2.train",
}


def violations_of(source: str, module: str, is_package: bool = False) -> list[Violation]:
    return check_module(source, module, is_package, f"{module.replace('.', '/')}.py", KNOWN)


def test_a_function_level_import_of_backends_in_models_is_caught_with_line_and_rule() -> None:
    source = "import torch\n\n\ndef f():\n    from swinv2.backends.mlp import fast_mlp\n    return fast_mlp\n"
    (violation,) = violations_of(source, "swinv2.models.swinv2")
    assert violation.line == 5
    assert violation.statement == "from swinv2.backends.mlp import fast_mlp"
    message = str(violation)
    assert "swinv2/models/swinv2.py:5" in message and "swinv2.models.swinv2" in message
    assert "models must not import swinv2.backends" in message


def test_layers_importing_models_or_the_root_is_caught() -> None:
    source = "from swinv2.config import Swinv2Config\nimport swinv2.models.registry\nfrom swinv2 import Swinv2Model\n"
    violations = violations_of(source, "swinv2.layers.windows")
    assert [(v.line, v.target) for v in violations] == [(2, "swinv2.models.registry"), (3, "swinv2")]
    assert all("layers imports nothing from swinv2 except io, config and layers" in str(v) for v in violations)


def test_relative_and_dynamic_imports_are_resolved() -> None:
    source = (
        "import importlib\n"
        "from . import windows\n"  # swinv2.layers.windows: same tier
        "from ..models import registry\n"  # swinv2.models.registry: above layers
        "def g():\n"
        "    return importlib.import_module('swinv2.cli')\n"
    )
    violations = violations_of(source, "swinv2.layers", is_package=True)
    assert [(v.line, v.target) for v in violations] == [(3, "swinv2.models.registry"), (5, "swinv2.cli")]


def test_upward_imports_between_other_tiers_are_caught() -> None:
    (violation,) = violations_of("from swinv2.cli import main\n", "swinv2.train")
    assert "a module imports only its own tier or lower ones (train may not import cli" in str(violation)
    assert not violations_of("from swinv2.zoo import get_variant\nimport swinv2.io.files\n", "swinv2.cli")
    assert not violations_of("from swinv2.models.swinv2 import Swinv2Block\n", "swinv2.backends.mlp")


def test_type_checking_imports_are_allowed_anywhere() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import typing\n"
        "if TYPE_CHECKING:\n"
        "    from swinv2.models.swinv2 import Swinv2Block\n"
        "if typing.TYPE_CHECKING:\n"
        "    import swinv2.cli\n"
        "else:\n"
        "    import swinv2.backends\n"  # runs: counted
    )
    (violation,) = violations_of(source, "swinv2.layers.windows")
    assert violation.line == 8 and violation.target == "swinv2.backends"


@pytest.mark.parametrize(
    ("module", "tier"),
    [
        ("swinv2", ROOT),
        ("swinv2.io.keymaps", "io"),
        ("swinv2.config", "config"),
        ("swinv2.loading", "app"),
        ("swinv2.pipeline", "app"),
        ("swinv2.train.trainer", "train"),
        ("swinv2.cli.__main__", "cli"),
        ("swinv2.unplaced", None),
    ],
)
def test_tiers_of_module_names(module: str, tier: str | None) -> None:
    assert tier_of(module) == tier
