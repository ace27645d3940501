"""A fake of the OpenAI Batch API (`/v1/files`, `/v1/batches`) inside the fake endpoint: a
batch's lines get the answers the online endpoint gives (`FakeLLM.text_for`).

A batch is `validating` when created and `in_progress` at its first retrieve; while `hold`
is set it stays there, else it runs at that retrieve, at once. Switches: `expire_after` (answer that
many lines, then the batch expires and the rest are `batch_expired`), `fail_every` (every
n-th line answered 500). Cancelling (by hand, through the SDK) answers `answer_before_cancel`
lines and cancels the rest. A file whose lines are not `{"custom_id", "method": "POST",
"url", "body"}` with unique ids fails the batch, as OpenAI's validation does; so does every
batch while `refuse` is set.
"""

import email.parser
import itertools
import json
import re
import time


def _multipart_file(content_type: str, raw: bytes) -> bytes:
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    for part in message.get_payload():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True)
    raise ValueError("no file part")


class FakeBatchAPI:
    def __init__(self, fake):
        self.fake = fake
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.lines: list[dict] = []  # every batch line answered or failed, as sent
        self.hold = False
        self.expire_after: int | None = None
        self.fail_every = 0
        self.answer_before_cancel = 0
        self.refuse = False  # fail every batch's validation
        self.uploads: list[bytes] = []
        self._ids = itertools.count(1)

    def handle(self, handler, method: str) -> bool:
        """Serve a Batch API request; False for any other path."""
        path = handler.path.split("?")[0]
        if not re.match(r"^/v1/(files|batches)", path):
            return False
        with self.fake.lock:
            if method == "POST" and path == "/v1/files":
                raw = handler.rfile.read(int(handler.headers["Content-Length"]))
                data = _multipart_file(handler.headers["Content-Type"], raw)
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = data
                self.uploads.append(data)
                handler._send(200, self._file(file_id, "batch"))
            elif method == "GET" and (m := re.match(r"^/v1/files/([^/]+)/content$", path)):
                data = self.files[m.group(1)]
                handler.send_response(200)
                handler.send_header("Content-Type", "application/octet-stream")
                handler.send_header("Content-Length", str(len(data)))
                handler.end_headers()
                handler.wfile.write(data)
            elif method == "POST" and path == "/v1/batches":
                body = json.loads(handler.rfile.read(int(handler.headers["Content-Length"])))
                handler._send(200, self._create(body))
            elif method == "GET" and path == "/v1/batches":  # newest first, as OpenAI lists them
                data = [self._public(b) for b in reversed(self.batches.values())]
                handler._send(200, {"object": "list", "data": data, "has_more": False})
            elif method == "GET" and (m := re.match(r"^/v1/batches/([^/]+)$", path)):
                handler._send(200, self._advance(self.batches[m.group(1)]))
            elif method == "POST" and (m := re.match(r"^/v1/batches/([^/]+)/cancel$", path)):
                handler._send(200, self._cancel(self.batches[m.group(1)]))
            else:
                handler._send(404, {"error": {"message": f"no {method} {path}"}})
        return True

    def _file(self, file_id: str, purpose: str) -> dict:
        return {"id": file_id, "object": "file", "bytes": len(self.files[file_id]), "created_at": int(time.time()),
                "filename": f"{file_id}.jsonl", "purpose": purpose, "status": "processed"}

    def _create(self, body: dict) -> dict:
        batch_id = f"batch_{next(self._ids)}"
        batch = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"], "status": "validating", "created_at": int(time.time()),
            "metadata": body.get("metadata"), "request_counts": {"completed": 0, "failed": 0, "total": 0},
        }
        lines = [json.loads(line) for line in self.files[body["input_file_id"]].decode().splitlines() if line.strip()]
        ids = [line.get("custom_id") for line in lines]
        problems = [
            {"code": "invalid_request", "message": f"line {i + 1} is not a request of {body['endpoint']}", "line": i + 1}
            for i, line in enumerate(lines)
            if set(line) != {"custom_id", "method", "url", "body"} or line["method"] != "POST"
            or line["url"] != body["endpoint"] or not {"model", "messages"} <= set(line["body"])
        ]
        if self.refuse:
            problems.append({"code": "invalid_model", "message": "the model is not available for batches", "line": None})
        if len(set(ids)) != len(ids):
            problems.append({"code": "duplicate_custom_id", "message": "custom ids repeat", "line": None})
        if problems:
            batch |= {"status": "failed", "errors": {"object": "list", "data": problems}}
        batch["_lines"] = lines
        self.batches[batch_id] = batch
        return self._public(batch)

    def _advance(self, batch: dict) -> dict:
        if batch["status"] == "validating":
            batch["status"] = "in_progress"
            batch["request_counts"]["total"] = len(batch["_lines"])
        if batch["status"] == "in_progress" and not self.hold:
            n = len(batch["_lines"])
            answered = n if self.expire_after is None else min(self.expire_after, n)
            self._finish(batch, answered, "completed" if answered == n else "expired", "batch_expired")
        elif batch["status"] == "cancelling":
            self._finish(batch, self.answer_before_cancel, "cancelled", "batch_cancelled")
        return self._public(batch)

    def _cancel(self, batch: dict) -> dict:
        if batch["status"] in ("validating", "in_progress"):
            batch["status"] = "cancelling"
        return self._public(batch)

    def _finish(self, batch: dict, answered: int, status: str, rest: str) -> None:
        out, errors = [], []
        for i, line in enumerate(batch["_lines"]):
            self.lines.append(line)
            custom_id, body = line["custom_id"], line["body"]
            if i >= answered:
                errors.append({"id": f"r{i}", "custom_id": custom_id, "response": None,
                               "error": {"code": rest, "message": f"This request could not be executed: {rest}."}})
            elif self.fail_every and (i + 1) % self.fail_every == 0:
                errors.append({"id": f"r{i}", "custom_id": custom_id, "error": None, "response": {
                    "status_code": 500, "request_id": f"q{i}", "body": {"error": {"message": "injected", "type": "server_error"}}}})
            else:
                out.append({"id": f"r{i}", "custom_id": custom_id, "error": None, "response": {
                    "status_code": 200, "request_id": f"q{i}", "body": self.fake.answer(body)}})
        for name, lines in (("output_file_id", out), ("error_file_id", errors)):
            if lines:
                file_id = f"file-{next(self._ids)}"
                self.files[file_id] = "".join(json.dumps(x) + "\n" for x in lines).encode()
                batch[name] = file_id
        batch["status"] = status
        batch["request_counts"] = {"completed": len(out), "failed": len(errors), "total": len(batch["_lines"])}

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if not k.startswith("_")}
