"""The chat data path survives a server that closes keep-alive connections.

llama-server, under 16 concurrent clients on reused keep-alive connections, closes some
of them without answering ("Server disconnected without sending a response"). A
FAKE loopback server reproduces exactly that: it answers the first request on each
connection and closes the connection when a second one arrives on it. A request that
fails so, before any byte of its answer, is sent once more on a new connection; one
that fails after its answer began is not (its first part already reached the client).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from ltcai.engines.base import ChatRequest, ServedModel
from ltcai.engines.openai_client import ChatHTTP, chat_completion, stream_chat_completion
from ltcai.errors import ChatError


@dataclass
class OneRequestPerConnection:
    """Answers one request per connection; a second request on it gets the socket closed.
    ``cut_streams``: stream two chunks, then close mid-answer."""

    cut_streams: bool = False
    connections: int = 0
    answered: int = 0
    dropped: int = 0
    server: asyncio.Server | None = field(default=None, repr=False)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served_here = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
                    0,
                )
                body = json.loads(await reader.readexactly(length))
                if served_here:
                    self.dropped += 1
                    return  # close without a response, as llama-server does
                served_here += 1
                self.answered += 1
                if body.get("stream"):
                    await self._stream(writer)
                    if self.cut_streams:
                        return
                else:
                    answer = json.dumps(
                        {"choices": [{"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}]}
                    ).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(answer), answer)
                    )
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in ("2 + 2", " = 4"):
            event = b"data: " + json.dumps({"choices": [{"delta": {"content": piece}, "finish_reason": None}]}).encode() + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await asyncio.sleep(0.01)
        if self.cut_streams:
            return
        done = b'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[tuple[OneRequestPerConnection, ServedModel]]:
    fake = OneRequestPerConnection()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    port = fake.server.sockets[0].getsockname()[1]
    served = ServedModel(engine="fake-llama-server", model="m", base_url=f"http://127.0.0.1:{port}/v1")
    async with fake.server:
        yield fake, served


REQUEST = ChatRequest(messages=[{"role": "user", "content": "2+2?"}], params={"max_tokens": 8})


@pytest.mark.asyncio
async def test_a_request_on_a_connection_the_server_closed_is_sent_again_on_a_new_one(upstream) -> None:
    fake, served = upstream
    async with ChatHTTP() as http:
        answers = [await chat_completion(http, served, REQUEST) for _ in range(3)]
    assert [a["choices"][0]["message"]["content"] for a in answers] == ["4", "4", "4"]
    assert fake.dropped >= 1, "the pooled connection must have been reused and dropped"
    assert fake.answered == 3  # each request answered exactly once


@pytest.mark.asyncio
async def test_streams_are_retried_only_before_their_first_byte(upstream) -> None:
    fake, served = upstream
    async with ChatHTTP() as http:
        for _ in range(2):  # the second goes out on the pooled connection, which is dropped
            chunks = [c async for c in stream_chat_completion(http, served, REQUEST)]
            assert "".join(c.content for c in chunks) == "2 + 2 = 4"
        assert fake.dropped >= 1 and fake.answered == 2

        fake.cut_streams = True
        received: list[str] = []
        with pytest.raises(ChatError) as failure:
            async for chunk in stream_chat_completion(http, served, REQUEST):
                received.append(chunk.content)
    assert received == ["2 + 2", " = 4"]  # what arrived, once; no second attempt repeats it
    assert failure.value.code == "engine_unreachable"
    assert fake.answered == 3
