"""An OpenAI-compatible endpoint on 127.0.0.1 that injects the faults real endpoints produce.

One request in five (every fifth, so that every run meets its faults) meets a fault, taken in
turn from `kinds`:
429 with Retry-After, 500, 503, a reset connection, a reply slower than the client's
timeout, JSON cut off at the token cap (`finish_reason: length`), and schema-valid JSON whose
content is wrong (a copy of the prompt's worked example; free text that answers nothing). Otherwise it answers as `FakeLLM` does.
More kinds: `cut` (a structured reply cut in half with `finish_reason: stop`, as a proxy that
drops the stream does; free text is answered whole, a cut in it cannot be seen), `ok` (no
fault, to alternate with another), `unauthorized` (401 whose body echoes the `Authorization`
header) and `echo` (a 200 whose reply quotes that header).
With `cut_rate`, that share of structured replies is `cut` besides, chosen by a hash of the
request and how often the same request came before, so the same replies are cut whatever
order concurrent requests arrive in.
Every request is logged on arrival and on completion, with its fault and the full reply.
"""

import hashlib
import json
import socket
import threading
import time
from http.server import ThreadingHTTPServer

from tests.fake_llm import JSONHandler, _reply_for, completion

TRANSPORT = ("429", "500", "503", "reset", "timeout")
CONTENT = ("truncated", "wrong_content")


class FaultyLLM:
    def __init__(self, kinds: tuple[str, ...] = TRANSPORT + CONTENT, every: int = 5, timeout_s: float = 3.0,
                 cut_rate: float = 0.0):
        self.kinds, self.every, self.timeout_s, self.cut_rate = kinds, every, timeout_s, cut_rate
        self.log: list[dict] = []  # {"body", "fault", "done", "authorization", "full": the reply uncut}
        self.seen: dict[str, int] = {}  # request body -> times asked
        self.lock = threading.Lock()
        fake = self

        class Handler(JSONHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    n = len(fake.log)
                    fault = None
                    if fake.kinds and n % fake.every == fake.every - 1:
                        fault = fake.kinds[n // fake.every % len(fake.kinds)]
                    if fault == "cut" and "response_format" not in body:
                        fault = None  # free text cut short looks like a short answer: not a fault to test
                    asked = json.dumps(body, sort_keys=True)
                    times = fake.seen[asked] = fake.seen.get(asked, 0) + 1
                    draw = int(hashlib.sha256(f"{asked}#{times}".encode()).hexdigest()[:8], 16) / 16**8
                    if fault is None and "response_format" in body and draw < fake.cut_rate:
                        fault = "cut"
                    key = self.headers.get("Authorization", "")
                    entry = {"body": body, "fault": fault, "done": False, "authorization": key}
                    fake.log.append(entry)
                if fault in ("429", "500", "503"):
                    self._send(int(fault), {"error": {"message": f"injected {fault}"}},
                               {"Retry-After": "0.1"} if fault == "429" else {})
                elif fault == "unauthorized":
                    self._send(401, {"error": {"message": f"invalid credentials: Authorization: {key}"}})
                elif fault == "reset":
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.close()
                elif fault == "timeout":
                    time.sleep(fake.timeout_s + 1)
                else:
                    try:
                        text = _reply_for(body["messages"])
                    except AttributeError:  # asked about an earlier wrong answer: the fake has no script
                        text = "I do not know."
                    finish, entry["full"] = "stop", text
                    if fault == "truncated":
                        text, finish = text[: max(1, len(text) * 2 // 3)], "length"
                    elif fault == "cut":
                        text = text[: len(text) // 2]
                    elif fault == "echo":
                        text = f"{text} (you sent Authorization: {key})"
                    elif fault == "wrong_content":
                        # Valid JSON of the right shape, about the wrong thing: the worked example.
                        shown = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
                        text = shown[0] if shown and "response_format" in body else "I do not know."
                    self._send(200, completion(body, text, finish))
                    entry["done"] = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def faults(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for entry in self.log:
            if entry["fault"] and entry["fault"] != "ok":
                counts[entry["fault"]] = counts.get(entry["fault"], 0) + 1
        return counts

    def __enter__(self) -> "FaultyLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
