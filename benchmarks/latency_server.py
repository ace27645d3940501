"""A local OpenAI-compatible endpoint with no model: every chat completion answers after a
fixed latency L, so C concurrent requests can reach at most C/L requests/s. Run as its own
process so that it does not share the client's interpreter:

    python benchmarks/latency_server.py PORT LATENCY_S [--fake]

By default every completion is one stub text. With `--fake` each gets the reply
`tests/fake_llm.py` gives its prompt (valid for every method's levels), so a whole build can
run against it. Either way the server keeps each completion's wall-clock start (request read)
and end (response written); `GET /timeline` returns them as `[[start, end], ...]` and clears
them, so a benchmark can count the requests in flight over time.
"""

import asyncio
import json
import sys
import time
from pathlib import Path

REPLY = json.dumps({
    "id": "cmpl", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "A stub answer."}}],
    "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}).encode()
TIMELINE: list[tuple[float, float]] = []


def fake_reply(body: bytes) -> bytes:
    """tests/fake_llm.py's reply to the request: what each level's prompt needs."""
    from tests.fake_llm import _reply_for, completion  # imported once, at the server's start

    request = json.loads(body)
    return json.dumps(completion(request, _reply_for(request["messages"]), "stop",
                                 len(request["messages"][-1]["content"].split()))).encode()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float, fake: bool) -> None:
    try:
        while True:  # keep-alive: one connection carries many requests
            head = await reader.readuntil(b"\r\n\r\n")
            start = time.time()
            lines = head.decode("latin-1").split("\r\n")
            length = next((int(ln.split(":", 1)[1]) for ln in lines if ln.lower().startswith("content-length:")), 0)
            data = await reader.readexactly(length) if length else b""
            if lines[0].startswith("GET") and "/timeline " in lines[0]:
                body = json.dumps(TIMELINE).encode()
                TIMELINE.clear()
            elif lines[0].startswith("GET"):
                body = MODELS
            else:
                body = fake_reply(data) if fake else REPLY
                await asyncio.sleep(latency)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            await writer.drain()
            if not lines[0].startswith("GET"):
                TIMELINE.append((start, time.time()))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int, latency: float, fake: bool) -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w, latency, fake), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    fake = "--fake" in sys.argv
    if fake:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        fake_reply(json.dumps({"model": "stub", "messages": [{"role": "user", "content": "warm up"}]}).encode())
    args = [a for a in sys.argv[1:] if a != "--fake"]
    asyncio.run(main(int(args[0]), float(args[1]), fake))
