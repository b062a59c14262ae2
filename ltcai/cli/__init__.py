"""``ltcai``: the command line. Talks to the daemon over its Unix socket.

Every error a user can cause prints one ``error:`` line (and a ``hint:``) and exits
non-zero; no traceback. ``--json`` prints machine-readable output for scripts.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ..errors import LtcaiError
from ._commands import run_command
from ._parser import build_parser
from ._render import Renderer

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    renderer = Renderer(json_output=getattr(args, "json", False))
    try:
        return run_command(args, renderer)
    except LtcaiError as exc:
        if renderer.json_output:
            renderer.emit_json({"error": exc.to_dict()})
        else:
            renderer.error(exc.message, exc.hint)
        return EXIT_ERROR
    except KeyboardInterrupt:
        renderer.err.print("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
