"""What the daemon and the client compute the same way, without a daemon.

Resolving a model id with the user's settings and plugins, and the layered compat
profile with the layer behind each field. ``ltcai inspect`` answers from here on a
machine where no daemon runs; the daemon imports the same functions, so both say the
same thing about one id.

May import ``compat``, ``config``, ``plugins`` and ``errors``; never ``ltcai.daemon``
(tests/cli/test_client_imports.py runs the client under ``-X importtime`` to check).
"""

from .profiles import explain_rows, layered_profile, profile_view
from .resolving import allowed_model_roots, resolve_with_settings

__all__ = [
    "allowed_model_roots",
    "explain_rows",
    "layered_profile",
    "profile_view",
    "resolve_with_settings",
]
