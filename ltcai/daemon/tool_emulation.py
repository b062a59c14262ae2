"""Tool calling for a model whose chat template has none (SPEC.md §7): described in the prompt,
constrained by the engine's JSON schema, returned as real ``tool_calls``.

llama-server with ``--jinja`` renders tools only through the model's own template; a
template without them (SmolLM2's) drops them silently. For such a model (the engine says
its tools come from the template: ``RequestRules.template_tools``) ltcai:

* states the tools and the answer's form in a system message, and turns earlier tool
  turns into plain text the template can render (an assistant's call as its JSON, a tool's
  result as a user turn naming the tool);
* with ``tool_choice`` "required" or a named tool, constrains the answer to a call with
  ``response_format`` ``json_schema`` (the engine's grammar); with "auto" the model may
  answer in prose;
* reads a call the model wrote, bare JSON, fenced, or in ``<tool_call>`` tags, back into
  ``tool_calls``; anything else stays the answer's content.

Pure: no I/O.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace
from typing import Any

from .validation import ChatCall

__all__ = ["emulated_call", "template_has_tools", "tool_calls_in"]

_TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
_WRAPPED = re.compile(r"^\s*(?:<tool_call>(?P<tag>.*?)</tool_call>|```(?:json)?\s*(?P<fence>.*?)```)\s*$", re.S)


def template_has_tools(chat_template: str | None) -> bool:
    """Whether a model's chat template renders tools (unknown: trust the engine)."""
    return chat_template is None or "tools" in chat_template


def _call_schema(tool: dict[str, Any]) -> dict[str, Any]:
    function = tool["function"]
    return {
        "type": "object",
        "properties": {
            "name": {"const": function["name"]},
            "arguments": function.get("parameters") or {"type": "object"},
        },
        "required": ["name", "arguments"],
    }


def _system_text(tools: list[dict[str, Any]], choice: Any) -> str:
    listing = json.dumps([t["function"] for t in tools], ensure_ascii=False)
    if isinstance(choice, dict):
        must = f"You must call the tool {choice['function']['name']}."
    elif choice == "required":
        must = "You must call one of the tools."
    else:
        must = "Call a tool only if it helps; otherwise answer normally."
    return (
        f"You can call these tools: {listing}\n{must} To call a tool, answer with only a JSON object: "
        '{"name": "<tool name>", "arguments": {<the arguments>}}'
    )


def _plain(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A turn a template without tools can render."""
    if message["role"] == "assistant" and message.get("tool_calls"):
        calls = []
        for call in message["tool_calls"]:
            names[call["id"]] = call["function"]["name"]
            try:
                arguments = json.loads(call["function"]["arguments"])
            except ValueError:
                arguments = call["function"]["arguments"]
            calls.append({"name": call["function"]["name"], "arguments": arguments})
        text = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
        return {"role": "assistant", "content": text}
    if message["role"] == "tool":
        name = names.get(message["tool_call_id"]) or message.get("name") or "the tool"
        return {"role": "user", "content": f"The tool {name} returned: {message['content']}"}
    return message


def emulated_call(call: ChatCall) -> ChatCall:
    """``call`` without tool fields: tools in the prompt, the call constrained when required."""
    tools = call.fields["tools"]
    choice = call.fields.get("tool_choice", "auto")
    names: dict[str, str] = {}
    messages = [_plain(m, names) for m in call.messages]
    system = _system_text(tools, choice)
    if messages and messages[0]["role"] == "system" and isinstance(messages[0]["content"], str):
        messages[0] = {**messages[0], "content": messages[0]["content"] + "\n\n" + system}
    else:
        messages.insert(0, {"role": "system", "content": system})
    fields = {k: v for k, v in call.fields.items() if k not in _TOOL_FIELDS}
    if choice == "required" or isinstance(choice, dict):
        chosen = [t for t in tools if not isinstance(choice, dict) or t["function"]["name"] == choice["function"]["name"]]
        schemas = [_call_schema(t) for t in chosen]
        schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "tool_call", "schema": schema}}
    return replace(call, messages=messages, fields=fields)


def tool_calls_in(text: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The tool calls a model wrote as text (bare JSON, fenced, ``<tool_call>``), or None."""
    wrapped = _WRAPPED.match(text)
    body = (wrapped.group("tag") or wrapped.group("fence")) if wrapped else text
    try:
        value = json.loads(body.strip())
    except ValueError:
        return None
    known = {t["function"]["name"] for t in tools}
    found = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, dict):
            return None
        name = item.get("name")
        arguments = item.get("arguments", item.get("parameters", {}))
        if name not in known or not isinstance(arguments, dict):
            return None
        found.append({
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
        })  # fmt: skip
    return found or None
