"""The lowest layer: child processes and files, for engines, config, the CLI and the daemon.

Nothing here imports any other part of ltcai (``ltcai.errors`` at most): every layer above
may stand on it, and it stands on none of them. ``tests/test_layering.py`` keeps it so.

- :mod:`ltcai.runtime.files`: atomic writes and private (0700) directories.
- :mod:`ltcai.runtime.process`: a child in its own process group, its output pump, and the
  :class:`~ltcai.runtime.process.ProcessHandle` / :class:`~ltcai.runtime.process.Spawner`
  an engine adapter receives instead of the daemon's supervisor.
"""
