"""Error codes are declared once (``ltcai.errors.ErrorCode``): a scan of ltcai's source.

The scan reads every module under ``ltcai/`` with ``ast`` and collects each error code
written down: a ``code=`` keyword, a ``code = …`` class attribute, a ``"code": …`` dict
entry (API error bodies, a child process's error summary), and the code argument of
``error_body``, ``StepFailed`` and ``StructuredError``. Every one must be declared; every
declared code must appear somewhere outside its declaration, so the Enum cannot collect
dead names either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import ltcai
from ltcai.errors import ErrorCode, LtcaiError

PACKAGE = Path(ltcai.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py"))
# Calls that take a code positionally: (function name, index of the code argument).
_POSITIONAL = {"error_body": 0, "StructuredError": 0, "StepFailed": 1}


def _literals(node: ast.expr) -> Iterator[str]:
    """The string constants a code expression can evaluate to (``a if c else b``, ``x or "y"``)."""
    match node:
        case ast.Constant(value=str(value)):
            yield value
        case ast.IfExp(body=body, orelse=orelse):
            yield from _literals(body)
            yield from _literals(orelse)
        case ast.BoolOp(values=values):
            for value in values:
                yield from _literals(value)


def _code_expressions(tree: ast.AST) -> Iterator[ast.expr]:
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "code":
            yield node.value
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
                    targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
                    if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                        yield statement.value
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code":
                    yield value
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            index = _POSITIONAL.get(name or "")
            if index is not None and len(node.args) > index:
                yield node.args[index]


def _is_error_code_enum(node: ast.AST) -> bool:
    return isinstance(node, ast.ClassDef) and node.name == "ErrorCode"


def _scan() -> tuple[dict[str, list[str]], set[str], set[str]]:
    """(code written down -> where, every string constant, every ErrorCode.NAME used)."""
    written: dict[str, list[str]] = {}
    constants: set[str] = set()
    members: set[str] = set()
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        where = str(path.relative_to(PACKAGE.parent))
        declarations = {id(n) for c in ast.walk(tree) if _is_error_code_enum(c) for n in ast.walk(c)}
        for expression in _code_expressions(tree):
            for code in _literals(expression):
                written.setdefault(code, []).append(f"{where}:{expression.lineno}")
        for node in ast.walk(tree):
            if id(node) in declarations:
                continue
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                constants.add(node.value)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ErrorCode":
                members.add(node.attr)
    return written, constants, members


WRITTEN, CONSTANTS, MEMBERS = _scan()


def test_the_scan_finds_the_codes_it_should() -> None:
    # Guards the scanner itself: one of each kind of place a code is written.
    assert "network_error" in WRITTEN  # code= keyword (engines)
    assert "body_too_large" in WRITTEN  # class attribute literal (daemon/body.py)
    assert "bad_http_request" in WRITTEN  # "code": in an error body (daemon/http_server.py)
    assert "internal_error" in WRITTEN  # error_body("internal_error", …) (daemon/api.py)
    assert "import_failed" in WRITTEN  # error.get("code") or "import_failed" (engines/mlx.py)
    assert {"CANCELLED", "SMOKE_TEST_FAILED", "PLUGIN_ERROR"} <= MEMBERS  # ErrorCode.X uses


def test_every_code_written_in_ltcai_is_declared() -> None:
    declared = {code.value for code in ErrorCode}
    undeclared = {code: where for code, where in WRITTEN.items() if code not in declared}
    assert not undeclared, f"declare these in ltcai.errors.ErrorCode (or use a declared one): {undeclared}"


def test_every_ErrorCode_member_referenced_exists() -> None:
    assert MEMBERS <= set(ErrorCode.__members__)


def test_every_declared_code_is_used() -> None:
    unused = [code for code in ErrorCode if code.value not in CONSTANTS and code.name not in MEMBERS]
    assert not unused, f"declared but never used: {unused}"


@pytest.mark.parametrize(
    ("merged", "kept"),
    [
        ("unreachable", "engine_unreachable"),
        ("model_file_not_found", "file_not_found"),
        ("not_supported", "unsupported"),
        ("unauthorized", "auth_failed"),
        ("engine_missing", "engine_unavailable"),
        ("protocol_error", "engine_bad_answer"),
    ],
)
def test_near_duplicates_are_merged(merged: str, kept: str) -> None:
    assert merged not in {code.value for code in ErrorCode} and merged not in WRITTEN
    assert ErrorCode(kept) and kept in WRITTEN


def test_every_error_class_has_a_declared_code_and_the_wire_form_is_a_plain_string() -> None:
    def subclasses(cls: type[LtcaiError]) -> Iterator[type[LtcaiError]]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for cls in (LtcaiError, *subclasses(LtcaiError)):
        assert ErrorCode(cls.code), cls
    body = LtcaiError("x", code=ErrorCode.NETWORK_ERROR).to_dict()
    assert type(body["code"]) is str and body["code"] == "network_error"
