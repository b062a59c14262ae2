"""Unit tests of the prepare report's stable JSON form (pure data, no I/O)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import ltcai.daemon.report as report_module
from ltcai.daemon.readiness import Readiness
from ltcai.daemon.report import REPORT_KEYS, PrepareReport, SmokeTest, StageLog, StructuredError
from ltcai.errors import DownloadError


def make_report(**changes: Any) -> PrepareReport:
    fields: dict[str, Any] = {
        "job_id": "job-1",
        "engine": "llamacpp",
        "model": "smollm2",
        "status": "ok",
        "state": "ready",
        "resolution": {"input_id": "smollm2", "engine": "llamacpp"},
        "current": "llamacpp:SmolLM2",
        "message": "smollm2 is ready to chat on llamacpp",
        "downloaded": True,
        "loaded": True,
        "ready_to_chat": True,
        "compatibility_status": "ok",
        "smoke_test": SmokeTest("2+2?", "2 + 2 = 4.", "ok", "ok", 0.9),
        "stage_logs": (
            StageLog("resolving", "resolved", 1.0, {"resolution": {"engine": "llamacpp"}}),
            StageLog("ready", "ready", 2.0),
        ),
        "error": None,
        "install_result": {"installed": False},
        "download_result": {"bytes": 98},
        "started_at": 0.5,
        "finished_at": 2.0,
        "duration_s": 1.5,
    }
    fields.update(changes)
    return PrepareReport(**fields)


def test_exported_names_are_the_public_api() -> None:
    assert sorted(report_module.__all__) == sorted(
        [
            "REPORT_KEYS",
            "PrepareReport",
            "SmokeStatus",
            "SmokeTest",
            "StageLog",
            "StructuredError",
        ]
    )


def test_report_keys_are_exactly_the_stable_api() -> None:
    # Changing this list changes a public API: clients and stored reports depend on it.
    assert REPORT_KEYS == (
        "job_id",
        "engine",
        "model",
        "status",
        "state",
        "resolution",
        "current",
        "message",
        "downloaded",
        "loaded",
        "ready_to_chat",
        "compatibility_status",
        "smoke_test",
        "stage_logs",
        "error",
        "install_result",
        "download_result",
        "started_at",
        "finished_at",
        "duration_s",
    )


def test_dataclass_fields_and_json_keys_follow_report_keys() -> None:
    assert tuple(f.name for f in dataclasses.fields(PrepareReport)) == REPORT_KEYS
    assert tuple(make_report().to_dict()) == REPORT_KEYS


def test_nested_key_sets_are_stable() -> None:
    data = make_report(
        error=StructuredError("download_failed", "sha256 mismatch", "downloading", "retry")
    ).to_dict()
    assert list(data["smoke_test"]) == ["prompt", "answer", "status", "reason", "seconds"]
    assert [list(log) for log in data["stage_logs"]] == [["state", "message", "time", "extra"]] * 2
    assert list(data["error"]) == ["code", "message", "state", "hint"]


@pytest.mark.parametrize(
    "report",
    [
        make_report(),
        make_report(
            status="failed",
            state="failed",
            ready_to_chat=False,
            compatibility_status="unknown",
            smoke_test=None,
            error=StructuredError("download_failed", "sha256 mismatch", "downloading", None),
            resolution=None,
            current=None,
            install_result=None,
            download_result=None,
        ),
    ],
    ids=["ready", "failed"],
)
def test_json_round_trip(report: PrepareReport) -> None:
    text = json.dumps(report.to_dict())
    assert PrepareReport.from_dict(json.loads(text)) == report


def test_from_dict_ignores_unknown_keys_from_a_newer_daemon() -> None:
    data = {**make_report().to_dict(), "added_later": 1}
    assert PrepareReport.from_dict(data) == make_report()


@pytest.mark.parametrize("key", REPORT_KEYS)
def test_from_dict_refuses_a_missing_key(key: str) -> None:
    data = make_report().to_dict()
    del data[key]
    with pytest.raises(ValueError, match=key):
        PrepareReport.from_dict(data)


def test_status_must_be_a_known_one() -> None:
    with pytest.raises(ValueError, match="status"):
        make_report(status="running")
    # A served model's later status is no way for a prepare to end.
    with pytest.raises(ValueError, match="status"):
        make_report(status="stopped")


@pytest.mark.parametrize(
    ("wire", "readiness"),
    [
        ("ok", Readiness.READY),
        ("degraded", Readiness.DEGRADED),
        ("failed", Readiness.FAILED),
        ("cancelled", Readiness.CANCELLED),
        ("interrupted", Readiness.INTERRUPTED),
    ],
)
def test_status_is_the_one_readiness_enum_with_the_wire_strings(wire: str, readiness: Readiness) -> None:
    report = make_report(status=wire)
    assert report.status is readiness
    assert PrepareReport.from_dict(report.to_dict()).status is readiness
    # The JSON carries the plain string a client (and a stored report) has always read.
    assert type(report.to_dict()["status"]) is str and report.to_dict()["status"] == wire


def test_smoke_status_must_be_a_known_one() -> None:
    with pytest.raises(ValueError, match="status"):
        SmokeTest("p", "a", "unknown", "r", 0.1)  # type: ignore[arg-type]


def test_stage_logs_become_a_tuple_so_the_report_stays_frozen() -> None:
    report = make_report(stage_logs=[StageLog("ready", "ready", 2.0)])
    assert isinstance(report.stage_logs, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = "failed"  # type: ignore[misc]


def test_structured_error_from_an_ltcai_error() -> None:
    error = StructuredError.from_error(
        DownloadError("sha256 mismatch", hint="retry"), "downloading"
    )
    assert error.to_dict() == {
        "code": "download_failed",
        "message": "sha256 mismatch",
        "state": "downloading",
        "hint": "retry",
    }
    assert StructuredError.from_dict(error.to_dict()) == error
