"""A fake OpenAI-compatible endpoint on 127.0.0.1: deterministic answers built from the
prompt, a log of every request, and switches for failures (429s, 5xx, unusable JSON). It
serves the Batch API too (`tests.fake_batch`), with the same answers."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from glan_assets.registry import METHODS
from tests.fake_batch import FakeBatchAPI


def _reply_for(messages: list[dict], outline: bool = False, broken: bool = False) -> str:
    """The first method's reply (each brings its own, `Method.fake_reply`), else the judge's,
    else an echo."""
    switches = {"outline": outline, "broken": broken}
    for method in METHODS:
        if (text := method.fake_reply(messages, switches)) is not None:
            return text
    if "impartial judge" in messages[0]["content"]:  # the quality judge: 2 for an answer cut off, else 8
        asked = next(m["content"] for m in messages if "[Answer]\n" in m["content"])  # a re-ask ends otherwise
        answer = asked.split("[Answer]\n", 1)[1].rsplit("\n[End of answer]", 1)[0]
        score = 2 if answer.rstrip().endswith(("and", ":")) else 8
        return json.dumps({"reason": f"stub verdict on {len(answer)} characters", "score": score})
    return f"An answer to: {messages[-1]['content']}"


class JSONHandler(BaseHTTPRequestHandler):
    """JSON replies, a model list on GET, and no request log on stderr."""

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body: dict, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})


def completion(body: dict, text: str, finish: str = "stop", prompt_tokens: int = 10) -> dict:
    """A chat completion answering `body` with `text`."""
    return {
        "id": "cmpl", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text.split()),
                  "total_tokens": prompt_tokens + len(text.split())},
    }


def shown_in(request: dict) -> str:
    """A request's messages joined: what the model is shown."""
    return "\n".join(m["content"] for m in request["messages"])


class FakeLLM:
    """Start with `with FakeLLM() as llm:`; `llm.base_url` is what OPENAI_BASE_URL needs."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next: list[tuple[int, dict]] = []  # (status, headers) returned before answering
        self.garbage_for: str | None = None  # answer prose to prompts containing this text
        self.replies: dict[str, str] = {}  # this reply to a request whose last message is the key (planted answers)
        self.delay_s = 0.0  # seconds each completion takes, to catch a run mid-partition
        self.delay_for: dict[str, float] = {}  # seconds a completion takes whose messages contain the key
        self.outline_syllabi = False  # write syllabi as "Session N / Key concepts" outlines
        self.broken_items = False  # one listed subject breaks the schema (no subtopics)
        self.copy_examples = False  # answer a request showing a worked example with a copy of it
        self.cut_off = 0  # this many replies, first come, are cut off at max_tokens
        self.completed: list[dict] = []  # requests whose response was fully sent
        self.lock = threading.Lock()
        fake = self
        self.batch_api = FakeBatchAPI(self)

        class Handler(JSONHandler):
            def do_GET(self):
                if not fake.batch_api.handle(self, "GET"):
                    super().do_GET()

            def do_POST(self):
                if fake.batch_api.handle(self, "POST"):
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    failure = fake.fail_next.pop(0) if fake.fail_next else None
                    cut = fake.cut_off > 0 and not failure
                    fake.cut_off -= cut
                    fake.requests.append(body | {"authorization": self.headers.get("Authorization", "")})
                if failure:
                    status, headers = failure
                    return self._send(status, {"error": {"message": "injected"}}, headers)
                text = fake.text_for(body)
                if cut:
                    text = text[: len(text) // 2]
                time.sleep(fake.delay_for_request(body))
                prompt = body["messages"][-1]["content"]
                self._send(200, completion(body, text, "length" if cut else "stop", len(prompt.split())))
                with fake.lock:
                    fake.completed.append(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def text_for(self, body: dict) -> str:
        """The reply to a request, by the switches: what an online and a batch request both get."""
        prompt = body["messages"][-1]["content"]
        shown = shown_in(body)
        shots = [m["content"] for m in body["messages"][:-1] if m["role"] == "assistant"]
        planted = self.replies.get(prompt)
        if self.garbage_for and self.garbage_for in shown:
            return "I cannot do JSON, sorry."
        if planted is not None:
            return planted
        if self.copy_examples and shots:
            return shots[0]
        return _reply_for(body["messages"], self.outline_syllabi, self.broken_items)

    def answer(self, body: dict) -> dict:
        """The chat completion a batch line gets: the online answer, never cut or failed."""
        return completion(body, self.text_for(body), "stop", len(body["messages"][-1]["content"].split()))

    def prompts(self) -> list[str]:
        """Each request's messages joined: what the model was shown."""
        return [shown_in(r) for r in self.requests]

    def delay_for_request(self, body: dict) -> float:
        """Seconds the completion of `body` takes: `delay_s`, and `delay_for`'s that match it."""
        shown = shown_in(body)
        return self.delay_s + sum(seconds for text, seconds in self.delay_for.items() if text in shown)

    def __enter__(self) -> "FakeLLM":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
