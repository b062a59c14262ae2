"""The GGUF format's constants from the ``gguf`` package, without the rest of the package.

``from gguf.constants import …`` first runs ``gguf/__init__.py``, which imports the
reader, the writer and the vocab code: numpy, PyYAML and sentencepiece, ~600 ms on the
2-core CI box, for a dozen constants. ``gguf/constants.py`` itself imports only ``enum``
and ``typing``, so it is loaded on its own from the installed package's folder; the
package stays the one source of the format's numbers (magic, value types, quant sizes).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["gguf_constants"]

_STANDALONE = "ltcai.engines._gguf_format_constants"


def gguf_constants() -> ModuleType:
    """``gguf.constants``, loaded without importing the ``gguf`` package when possible."""
    if _STANDALONE in sys.modules:
        return sys.modules[_STANDALONE]
    package = importlib.util.find_spec("gguf")  # finds, does not run, the package
    folders = package.submodule_search_locations if package is not None else None
    if not folders:  # not installed as a plain folder: the ordinary import says why
        return importlib.import_module("gguf.constants")
    spec = importlib.util.spec_from_file_location(_STANDALONE, Path(folders[0]) / "constants.py")
    if spec is None or spec.loader is None:
        return importlib.import_module("gguf.constants")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_STANDALONE] = module  # enum's pickling support looks the module up by name
    spec.loader.exec_module(module)
    return module
