"""What may import what (issue 10): the lower layers never reach up into the daemon.

Every import statement is read with ``ast``, wherever it is: at the top, inside a function,
under ``if TYPE_CHECKING:``. Relative imports are resolved against the module's package,
so ``from ..daemon import x`` counts as much as ``import ltcai.daemon.x``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ltcai

PACKAGE_ROOT = Path(ltcai.__file__).parent
# Layers below the daemon: engines, config, compat, plugins, the client core and the runtime.
BELOW_THE_DAEMON = ("engines", "config", "compat", "core", "plugins", "runtime")
# What ltcai.runtime, the lowest layer, may import of ltcai.
RUNTIME_MAY_IMPORT = ("ltcai.runtime", "ltcai.errors")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def ltcai_imports(path: Path) -> set[str]:
    """Every ltcai module the file at ``path`` imports."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """The ltcai modules ``source`` (a module of ``package``) imports, as absolute names.

    ``from x import y`` counts as ``x`` and ``x.y``: ``y`` may be a module.
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            found.add(origin)
            found.update(f"{origin}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "ltcai" or name.startswith("ltcai.")}


def _modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (PACKAGE_ROOT / package).rglob("*.py"))


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", _modules(*BELOW_THE_DAEMON), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_no_layer_below_the_daemon_imports_it(path: Path) -> None:
    assert not {name for name in ltcai_imports(path) if _within(name, ("ltcai.daemon",))}


@pytest.mark.parametrize("path", _modules("runtime"), ids=lambda p: str(p.relative_to(PACKAGE_ROOT)))
def test_the_runtime_imports_nothing_of_ltcai_above_it(path: Path) -> None:
    # ``from .. import x`` would resolve to bare "ltcai": above the runtime as well.
    assert not {name for name in ltcai_imports(path) if not _within(name, RUNTIME_MAY_IMPORT)}


def test_the_import_reader_sees_every_kind_of_import() -> None:
    """The scan itself: relative, in-function and type-checking-only imports all count."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..runtime.process import Spawner\n"
        "if TYPE_CHECKING:\n"
        "    from ..daemon.supervisor import Supervisor\n"
        "def late():\n"
        "    import ltcai.daemon.store\n"
        "    from .. import daemon\n"
        "    from . import base\n"
    )
    assert imports_in(source, "ltcai.engines") == {
        "ltcai.runtime.process", "ltcai.runtime.process.Spawner",
        "ltcai.daemon.supervisor", "ltcai.daemon.supervisor.Supervisor",
        "ltcai.daemon.store", "ltcai", "ltcai.daemon", "ltcai.engines", "ltcai.engines.base",
    }


def test_every_layer_named_here_exists() -> None:
    assert all((PACKAGE_ROOT / package / "__init__.py").is_file() for package in BELOW_THE_DAEMON)
