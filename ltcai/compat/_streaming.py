"""Post-processing an answer as it streams (SPEC.md §3 Improve): the named steps' streaming
twins chained, emitting exactly what :func:`apply_postprocess` returns for the whole
answer, as early as that is known.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from ._stages import PassThrough, StreamStage
from ._steps import POSTPROCESSORS, Postprocessor, run_step

__all__ = ["StreamPostprocessor", "stages_for"]

_log = structlog.get_logger(__name__)


class _WholeTextStage:
    """A step with no streaming twin: buffer, apply once at the end."""

    __slots__ = ("_name", "_step", "_log", "_parts")

    def __init__(self, name: str, step: Callable[[str], str], log: Any) -> None:
        self._name, self._step, self._log = name, step, log
        self._parts: list[str] = []

    def feed(self, text: str) -> str:
        self._parts.append(text)
        return ""

    def finish(self) -> str:
        text = "".join(self._parts)
        self._parts.clear()
        return run_step(self._name, self._step, text, self._log)


def stages_for(
    steps: Sequence[str], registry: Mapping[str, Callable[[str], str]] | None, log: Any
) -> list[tuple[str, StreamStage]]:
    table = POSTPROCESSORS if registry is None else registry
    stages: list[tuple[str, StreamStage]] = []
    for name in steps:
        step = table.get(name)
        if step is None:
            log.warning("postprocess_unknown_step", step=name)
        elif isinstance(step, Postprocessor) and step.stream is not None:
            stages.append((name, step.stream()))
        else:
            stages.append((name, _WholeTextStage(name, step, log)))
    return stages


class StreamPostprocessor:
    """Post-process an answer as it streams; emits exactly what :func:`apply_postprocess`
    would return for the whole answer, as early as that is known.

    Call :meth:`feed` per chunk and :meth:`finish` once at the end. A step with no
    streaming twin holds everything from it on until :meth:`finish`. A streaming stage
    that raises is logged and bypassed from then on (what it held is lost).
    """

    __slots__ = ("_names", "_stages", "_feeds", "_log")

    def __init__(
        self,
        steps: Sequence[str],
        registry: Mapping[str, Callable[[str], str]] | None = None,
        *,
        log: Any = None,
    ) -> None:
        self._log = _log if log is None else log
        self._set_stages(stages_for(steps, registry, self._log))

    def _set_stages(self, stages: list[tuple[str, StreamStage]]) -> None:
        self._names = [name for name, _ in stages]
        self._stages = [stage for _, stage in stages]
        self._feeds = [stage.feed for stage in self._stages]

    def feed(self, chunk: str) -> str:
        """The post-processed text that is final now (often all of ``chunk``)."""
        for i, feed in enumerate(self._feeds):
            if not chunk:
                return ""
            try:
                chunk = feed(chunk)
            except Exception as exc:  # noqa: PERF203  (free in 3.11 unless raised)
                self._bypass(i, exc)
        return chunk

    def finish(self) -> str:
        """The rest of the post-processed text; the processor is spent afterwards."""
        text = ""
        for i, stage in enumerate(self._stages):
            try:
                text = (stage.feed(text) if text else "") + stage.finish()
            except Exception as exc:
                self._bypass(i, exc)
        return text

    def _bypass(self, index: int, exc: Exception) -> None:
        self._log.warning(
            "postprocess_step_failed", step=self._names[index], error=repr(exc), streaming=True
        )
        self._stages[index] = PassThrough()
        self._feeds[index] = self._stages[index].feed
