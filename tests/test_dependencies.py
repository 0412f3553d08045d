"""pyproject.toml declares exactly the distributions that the shipped code (the package, the KFP
components, the pipeline) imports: an import of an undeclared distribution, or a declared one that
nothing uses, fails here."""

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("selflengthen", "components", "pipelines")
# Declared distributions that the code uses through another one, never by an import of its own.
USED_WITHOUT_IMPORT = {
    "accelerate": "transformers' Trainer requires and imports it",
    "deepspeed": "transformers' Trainer imports it for a training.deepspeed preset",
}


def normalize(name: str) -> str:
    """A distribution name in its canonical form (PEP 503): PyYAML and pyyaml are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> set[str]:
    requirements = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {normalize(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement).group()) for requirement in requirements}


def imported_modules(roots: list[Path]) -> dict[str, set[str]]:
    """Absolute dotted names the files under ``roots`` import (for ``from a import b``: ``a`` and
    ``a.b``, since ``b`` may be a submodule) -> the files importing them."""
    modules: dict[str, set[str]] = {}
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
                else:
                    continue
                for name in names:
                    modules.setdefault(name, set()).add(str(path.relative_to(root.parent)))
    return modules


@functools.cache
def top_level_distributions() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.cache
def shipped_files(distribution: str) -> frozenset[str]:
    return frozenset(str(file) for file in importlib.metadata.distribution(distribution).files or ())


def providers(module: str) -> set[str]:
    """The installed distributions that provide ``module``: the ones shipping the file of the module or
    of its nearest parent, since distributions share top-level names (``kfp.kubernetes`` is kfp-kubernetes,
    ``kfp.dsl`` and ``kfp.dsl.Metrics`` are kfp); empty for the standard library."""
    top = module.split(".")[0]
    if top in sys.stdlib_module_names:
        return set()
    candidates = top_level_distributions().get(top, [])
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        path = "/".join(parts[:depth])
        owners = {name for name in candidates if {f"{path}.py", f"{path}/__init__.py"} & shipped_files(name)}
        if owners:
            return {normalize(name) for name in owners}
    return {normalize(name) for name in candidates}  # compiled modules: no .py file to tell them apart


def imported_distributions(roots: list[Path], own: set[str]) -> dict[str, set[str]]:
    """Distribution -> the files importing it, leaving out the project's own packages ``own``."""
    found: dict[str, set[str]] = {}
    for module, files in imported_modules(roots).items():
        if module.split(".")[0] in own:
            continue
        for distribution in providers(module):
            found.setdefault(distribution, set()).update(files)
    return found


def test_every_import_is_declared_and_every_declaration_is_used():
    imported = imported_distributions([REPO / name for name in SOURCES], set(SOURCES))
    declarations = declared()
    undeclared = {name: sorted(files) for name, files in imported.items() if name not in declarations}
    unused = declarations - set(imported) - set(USED_WITHOUT_IMPORT)
    assert not undeclared, f"imported but not in [project].dependencies: {undeclared}"
    assert not unused, f"in [project].dependencies but imported nowhere: {sorted(unused)}"
    assert set(USED_WITHOUT_IMPORT) <= declarations
    assert not set(USED_WITHOUT_IMPORT) & set(imported), "imported now: drop it from USED_WITHOUT_IMPORT"


def test_the_check_finds_imports_by_distribution_not_by_top_level_name(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "a.py").write_text(
        "import os\nimport yaml\nfrom kfp import dsl, kubernetes\nfrom kfp.dsl import Metrics\n"
        "from pkg import b\nfrom . import c\n"
    )
    (package / "b.py").write_text("import psutil.tests\nfrom pydantic_core import PydanticUndefined\n")
    found = imported_distributions([package], {"pkg"})
    assert found == {
        "pyyaml": {"pkg/a.py"},
        "kfp": {"pkg/a.py"},
        "kfp-kubernetes": {"pkg/a.py"},
        "psutil": {"pkg/b.py"},
        "pydantic-core": {"pkg/b.py"},
    }
