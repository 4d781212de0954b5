"""OpenAI's Batch API on 127.0.0.1 for tests: the files and batches endpoints the openai client
calls, with each batch line answered by a real upstream chat server (vLLM's OpenAI server).

The real Batch API cannot be reached from here. This server speaks its wire protocol (multipart
file upload, batch objects and their status, output and error files of `{custom_id, response,
error}` lines) so OpenAIBatchBackend runs unchanged against it, while every answer comes from
the real model. Two knobs stand for what the real service does slowly or rarely: `hold` keeps
batches in progress until released, `expire_after` answers only that many lines of a batch and
marks the rest expired, as OpenAI does when the completion window passes.

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

from tests.servers import free_port


class LocalBatchAPI:
    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._auth: dict[str, str] = {}  # batch id -> the Authorization it was created with
        self.hold = threading.Event()  # set: batches wait in progress
        self.expire_after: int | None = None
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

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        data = self.files[self.batches[batch_id]["input_file_id"]]
        return [json.loads(line) for line in data.decode().splitlines()]

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

    def _run(self, batch: dict[str, Any]) -> None:
        batch["status"] = "in_progress"
        while self.hold.is_set():
            time.sleep(0.1)
        lines = self.input_lines(batch["id"])
        auth = {"Authorization": self._auth.get(batch["id"], "")}
        with httpx.Client(timeout=300, headers=auth) as client, ThreadPoolExecutor(4) as pool:
            entries = list(pool.map(lambda nl: self._answer(client, *nl), enumerate(lines)))
        out = [e for e in entries if e["response"] and e["response"]["status_code"] == 200]
        err = [e for e in entries if e not in out]
        for kind, entries in (("output_file_id", out), ("error_file_id", err)):
            if entries:
                data = "".join(json.dumps(e) + "\n" for e in entries).encode()
                name = f"{batch['id']}_{kind}.jsonl"
                batch[kind] = self._new_file(data, name, "batch_output")["id"]
        batch["request_counts"] = {"total": len(lines), "completed": len(out), "failed": len(err)}
        batch["status"] = "expired" if self.expire_after is not None else "completed"

    def _answer(self, client: httpx.Client, n: int, line: dict[str, Any]) -> dict[str, Any]:
        entry = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "error": None}
        if self.expire_after is not None and n >= self.expire_after:
            error = {"code": "batch_expired", "message": "not completed in time"}
            return {**entry, "response": None, "error": error}
        r = client.post(self.upstream + line["url"].removeprefix("/v1"), json=line["body"])
        return {**entry, "response": {"status_code": r.status_code, "body": r.json()}}

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/files")
        async def create_file(file: UploadFile = File(...), purpose: str = Form(...)):  # noqa: B008
            return self._new_file(await file.read(), file.filename or "upload", purpose)

        @app.get("/v1/files/{file_id}/content")
        def file_content(file_id: str):
            return Response(self.files[file_id], media_type="application/octet-stream")

        @app.post("/v1/batches")
        async def create_batch(request: Request):
            body = await request.json()
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
            }
            self.batches[batch["id"]] = batch
            self._auth[batch["id"]] = request.headers.get("authorization", "")
            threading.Thread(target=self._run, args=(batch,), daemon=True).start()
            return batch

        @app.get("/v1/batches/{batch_id}")
        def get_batch(batch_id: str):
            return self.batches[batch_id]

        return app
