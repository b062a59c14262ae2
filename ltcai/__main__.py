"""``python -m ltcai``: the ``ltcai`` command, for when only the interpreter's path is known.

The service units run ``/abs/path/to/python -m ltcai serve``: an interpreter path is stable
across venv, pipx and system installs, where the ``ltcai`` script may not be on the
service manager's PATH.
"""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
