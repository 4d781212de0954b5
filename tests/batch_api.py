"""OpenAI's Batch API on 127.0.0.1 for tests: the files and batches endpoints the openai client
calls, with each batch line answered by a real upstream chat server (vLLM's OpenAI server).

The real Batch API cannot be reached from here. This server speaks its wire protocol (multipart
file upload, batch objects and their status, output and error files of `{custom_id, response,
error}` lines) so OpenAIBatchBackend runs unchanged against it, while every answer comes from
the real model. As OpenAI documents it:
- statuses `validating` -> `in_progress` -> `finalizing` -> `completed`; `failed` when the
  input does not validate (`errors.data`, no files); `expired` when the completion window
  passes, the lines not done written to the error file as `batch_expired`; `cancelling` ->
  `cancelled` on POST /v1/batches/{id}/cancel, with the partial results (if any) in the output
  file; `output_file_id`/`error_file_id` null when there is nothing to put in them;
  `request_counts` {total, completed, failed};
- limits: a batch input file of at most 200 MB (a larger upload is a 400, "File is too
  large."), at most 50,000 requests a batch (more fails the batch in validation; the error's
  code and wording are ours, the documentation gives only the limit);
- a batch or file it does not know is a 404 in OpenAI's error body shape.

Knobs for what the real service does slowly or rarely: `hold` keeps batches in progress before
their line `hold_after` (lines before it are answered) until cleared or the batch is cancelled;
`expire_after` answers only that many lines of a batch and expires the rest (0: an expired batch
with no answer); `forget(batch_id)` makes the server no longer know a batch; `max_requests` and
`max_file_bytes` lower the limits for tests. `created` counts batch creations, `unknown` lists
the ids asked for after they were forgotten.

With tests/openai_contract.py as its upstream, each line is checked by OpenAI's rules too: the
batch forwards the key it was created with, and a refused line comes back in the error file
with its status and OpenAI's error body, as the real Batch API returns it.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, File, Form, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from tests.servers import free_port

MAX_REQUESTS = 50_000
MAX_FILE_BYTES = 200_000_000
STATUSES = (
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
)


def error(status: int, message: str, param: str | None = None) -> JSONResponse:
    body = {"message": message, "type": "invalid_request_error", "param": param, "code": None}
    return JSONResponse({"error": body}, status)


class LocalBatchAPI:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}  # every batch created, forgotten ones too
        self.forgotten: set[str] = set()
        self.unknown: list[str] = []
        self._auth: dict[str, str] = {}  # batch id -> the Authorization it was created with
        self._lock = threading.Lock()
        self.hold = threading.Event()  # set: batches wait in progress at line `hold_after`
        self.hold_after = 0
        self.expire_after: int | None = None
        self.max_requests = MAX_REQUESTS
        self.max_file_bytes = MAX_FILE_BYTES
        self._ids = itertools.count(1)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LocalBatchAPI:
        self._thread.start()
        while not self._server.started:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.clear()
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def created(self) -> int:
        return len(self.batches)

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        data = self.files[self.batches[batch_id]["input_file_id"]]
        return [json.loads(line) for line in data.decode().splitlines()]

    def output_lines(self, batch_id: str) -> list[dict[str, Any]]:
        file_id = self.batches[batch_id]["output_file_id"]
        data = self.files[file_id] if file_id else b""
        return [json.loads(line) for line in data.decode().splitlines()]

    def forget(self, batch_id: str) -> None:
        self.forgotten.add(batch_id)

    def wait_until(self, batch_id: str, status: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while self.batches[batch_id]["status"] != status:
            assert time.monotonic() < deadline, f"{batch_id}: {self.batches[batch_id]['status']}"
            time.sleep(0.05)

    def _new_file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }

    def _set(self, batch: dict[str, Any], status: str) -> None:
        batch["status"] = status
        batch[f"{status}_at"] = int(time.time())

    def _run(self, batch: dict[str, Any]) -> None:
        lines = self.input_lines(batch["id"])
        with self._lock:
            if len(lines) > self.max_requests:
                message = f"A batch may include up to {self.max_requests} requests."
                batch["errors"] = {
                    "object": "list",
                    "data": [{"code": "too_many_requests", "message": message, "line": None}],
                }
                return self._set(batch, "failed")
            if batch["status"] == "validating":
                self._set(batch, "in_progress")
        batch["request_counts"]["total"] = len(lines)
        auth = {"Authorization": self._auth.get(batch["id"], "")}
        with httpx.Client(timeout=300, headers=auth) as client, ThreadPoolExecutor(4) as pool:
            answered = pool.map(lambda nl: self._answer(client, batch, *nl), enumerate(lines))
            entries = [e for e in answered if e is not None]  # None: cancelled before its turn
        with self._lock:
            cancelled = batch["status"] == "cancelling"
            if not cancelled:
                self._set(batch, "finalizing")
        out = [e for e in entries if e["response"] and e["response"]["status_code"] == 200]
        err = [e for e in entries if e not in out]
        for kind, entries in (("output_file_id", out), ("error_file_id", err)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                name = f"{batch['id']}_{kind}.jsonl"
                batch[kind] = self._new_file(data, name, "batch_output")["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        if cancelled:
            self._set(batch, "cancelled")
        elif self.expire_after is not None:
            self._set(batch, "expired")
        else:
            self._set(batch, "completed")

    def _answer(
        self, client: httpx.Client, batch: dict[str, Any], n: int, line: dict[str, Any]
    ) -> dict[str, Any] | None:
        gone = lambda: batch["status"] == "cancelling" or batch["id"] in self.forgotten  # noqa: E731
        while n >= self.hold_after and self.hold.is_set() and not gone():
            time.sleep(0.05)
        if gone():  # a forgotten batch stands for one the server dropped: nothing more is done
            return None
        entry = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None}
        if self.expire_after is not None and n >= self.expire_after:
            expired = {"code": "batch_expired", "message": "not completed in time"}
            return {**entry, "response": None, "error": expired}
        r = client.post(self.upstream + line["url"].removeprefix("/v1"), json=line["body"])
        with self._lock:
            batch["request_counts"]["completed"] += r.status_code == 200
            batch["request_counts"]["failed"] += r.status_code != 200
        return {**entry, "response": {"status_code": r.status_code, "body": r.json()}}

    def _known(self, batch_id: str) -> dict[str, Any] | None:
        if batch_id in self.batches and batch_id not in self.forgotten:
            return self.batches[batch_id]
        self.unknown.append(batch_id)
        return None

    def _create_batch(self, body: dict[str, Any], authorization: str) -> dict[str, Any]:
        batch = {
            "id": f"batch_{next(self._ids)}",
            "object": "batch",
            "endpoint": body["endpoint"],
            "input_file_id": body["input_file_id"],
            "completion_window": body["completion_window"],
            "metadata": body.get("metadata"),
            "status": "validating",
            "created_at": int(time.time()),
            "output_file_id": None,
            "error_file_id": None,
            "errors": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            **{f"{s}_at": None for s in STATUSES},
        }
        self.batches[batch["id"]] = batch
        self._auth[batch["id"]] = authorization
        threading.Thread(target=self._run, args=(batch,), daemon=True).start()
        return batch

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/files")
        async def create_file(file: UploadFile = File(...), purpose: str = Form(...)):  # noqa: B008
            data = await file.read()
            if purpose == "batch" and len(data) > self.max_file_bytes:
                return error(400, "File is too large.")
            return self._new_file(data, file.filename or "upload", purpose)

        @app.get("/v1/files/{file_id}/content")
        def file_content(file_id: str):
            if file_id not in self.files:
                return error(404, f"No such File object: {file_id}", "id")
            return Response(self.files[file_id], media_type="application/octet-stream")

        @app.post("/v1/batches")
        async def create_batch(request: Request):
            body = await request.json()
            if body.get("input_file_id") not in self.files:
                return error(404, f"No such File object: {body.get('input_file_id')}")
            return self._create_batch(body, request.headers.get("authorization", ""))

        @app.get("/v1/batches/{batch_id}")
        def get_batch(batch_id: str):
            batch = self._known(batch_id)
            return batch or error(404, f"No batch found with id '{batch_id}'.")

        @app.post("/v1/batches/{batch_id}/cancel")
        def cancel_batch(batch_id: str):
            batch = self._known(batch_id)
            if batch is None:
                return error(404, f"No batch found with id '{batch_id}'.")
            with self._lock:
                if batch["status"] not in ("validating", "in_progress"):
                    return error(400, f"Cannot cancel a batch with status {batch['status']}.")
                self._set(batch, "cancelling")
            return batch

        return app
