"""The same teacher requests sent through OpenAI's Batch API: half the price of synchronous calls,
answered within a completion window (up to 24 h) instead of seconds.

A job's requests go out as JSONL files of at most `max_requests` lines (and OpenAI's 200 MB),
all submitted at once. Each file is named by the hash of its content, and the batch made from it
is recorded under `state_dir` the moment it is created: a job killed while it waits (or a
wall-time limit) resumes the same batches on rerun instead of paying for them again. Answers are
read from the output and error files; requests that failed or expired are handed up with the
answered ones (which the client caches), so a rerun submits only what is still missing.
Error lines follow the synchronous backend's rules: a line refused as longer than the context is
dropped (`context_length`), a line refused for its shape or key stops the job with the server's
message (a rerun would be refused alike).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from speed.io import atomic_file
from speed.llm.openai_backend import OpenAIBackend, TeacherAPIError, failure_kind
from speed.llm.types import CONTEXT_LENGTH, Completion, Request

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
MAX_FILE_BYTES = 190_000_000  # OpenAI takes batch input files up to 200 MB
WAITING = {"validating", "in_progress", "finalizing", "cancelling"}


class OpenAIBatchBackend(OpenAIBackend):
    # The client hands over a whole job at once: batches of many requests are the point.
    chunk_size = sys.maxsize

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str,
        state_dir: str | Path,
        completion_window: str = "24h",
        poll_s: float = 60.0,
        max_requests: int = 50_000,
        max_file_bytes: int = MAX_FILE_BYTES,
        **options: Any,
    ):
        # Same identity as synchronous calls: the same model answers, so the cache is shared.
        super().__init__(model, base_url, api_key_env, **options)
        self.state_dir = Path(state_dir)
        self.completion_window = completion_window
        self.poll_s = poll_s
        self.max_requests = max_requests
        self.max_file_bytes = max_file_bytes

    def parts(self, requests: list[Request]) -> list[list[int]]:
        """Positions of the requests in each batch file: at most `max_requests` lines and
        `max_file_bytes` bytes per file, in order."""
        parts: list[list[int]] = [[]]
        size = 0
        for i, request in enumerate(requests):
            n = len(json.dumps(self._body(request))) + 100  # + the line's envelope
            full = len(parts[-1]) == self.max_requests or size + n > self.max_file_bytes
            if parts[-1] and full:
                parts.append([])
                size = 0
            parts[-1].append(i)
            size += n
        return [p for p in parts if p]

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        from openai import APIError

        parts = self.parts(requests)
        done: dict[int, list[Completion]] = {}
        errors: list[str] = []
        refused: list[TeacherAPIError] = []
        try:
            with self._client(asynchronous=False) as client:
                batches = [self._submit(client, [requests[i] for i in part]) for part in parts]
                batches = [self._wait(client, b) for b in batches]
                for part, batch in zip(parts, batches, strict=True):
                    answers, failures, stops = self._collect(
                        client, batch, [requests[i] for i in part]
                    )
                    done.update({part[j]: out for j, out in answers.items()})
                    errors += failures
                    refused += stops
        except APIError as err:
            # Uploads, batch calls and file downloads: not chained, the server's text may hold
            # the key (a traceback would print it unscrubbed).
            raise TeacherAPIError(
                f"batch API at {self.where}: {type(err).__name__}: {self.scrub(err)}", done
            ) from None
        if refused:
            raise type(refused[0])(
                f"{refused[0]} ({len(refused)} of {len(requests)} batch requests refused)", done
            )
        if errors:
            raise TeacherAPIError(
                f"{len(errors)} of {len(requests)} batch requests at {self.where} got no answer "
                f"(first: {errors[0]}); the answered ones are kept, a rerun submits the rest",
                done,
            )
        return [done[i] for i in range(len(requests))]

    def _submit(self, client: Any, requests: list[Request]) -> Any:
        """The batch for these requests: the one a killed job recorded, else a new one."""
        lines = [
            {"custom_id": str(i), "method": "POST", "url": ENDPOINT, "body": self._body(r)}
            for i, r in enumerate(requests)
        ]
        data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
        digest = hashlib.sha256(f"{self.where}\n".encode() + data).hexdigest()[:32]
        record = self.state_dir / f"{digest}.json"
        if record.exists():
            batch = client.batches.retrieve(json.loads(record.read_text())["batch_id"])
            if batch.status != "failed":
                log.info("resuming batch %s (%s), %d requests", batch.id, batch.status, len(lines))
                return batch
        upload = client.files.create(file=(f"speed-{digest}.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window=self.completion_window,
            metadata={"speed_input": digest},
        )
        # Recorded before any wait: from here on the batch is being paid for.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(record) as f:
            json.dump({"batch_id": batch.id, "input_file_id": upload.id, "n": len(lines)}, f)
        log.info("submitted batch %s of %d requests (record %s)", batch.id, len(lines), record)
        return batch

    def _wait(self, client: Any, batch: Any) -> Any:
        while batch.status in WAITING:
            time.sleep(self.poll_s)
            batch = client.batches.retrieve(batch.id)
            counts = batch.request_counts
            if counts is not None:
                log.info(
                    "batch %s %s: %d/%d done, %d failed",
                    batch.id,
                    batch.status,
                    counts.completed,
                    counts.total,
                    counts.failed,
                )
        if batch.status == "failed":
            errors = getattr(batch.errors, "data", None) or []
            why = "; ".join(
                f"{e.code}: {e.message} (line {e.line}"
                + (f", parameter {e.param})" if getattr(e, "param", None) else ")")
                for e in errors[:5]
            )
            raise TeacherAPIError(
                f"batch {batch.id} at {self.where} was refused: {self.scrub(why)}"
            )
        return batch

    def _collect(
        self, client: Any, batch: Any, requests: list[Request]
    ) -> tuple[dict[int, list[Completion]], list[str], list[TeacherAPIError]]:
        """Answers by position (dropped ones included), one message per request without an
        answer, and the refusals that stop the job."""
        from openai.types.chat import ChatCompletion

        lines: dict[int, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for raw in client.files.content(file_id).text.splitlines():
                    if raw.strip():
                        line = json.loads(raw)
                        lines[int(line["custom_id"])] = line
        answers, failures, refused = {}, [], []
        for i, request in enumerate(requests):
            line = lines.get(i)
            response = (line or {}).get("response") or {}
            status = response.get("status_code")
            if status == 200:
                body = ChatCompletion.model_validate(response["body"])
                try:  # a batch has no per-request latency: the ledger records 0
                    answers[i] = self._completions(body, request, 0.0)
                except TeacherAPIError as err:
                    failures.append(str(err))
            elif line is None:
                failures.append(f"request {request.id or i}: no line in {batch.status} {batch.id}")
            else:
                error = (response.get("body") or {}).get("error") or line.get("error") or {}
                error = error if isinstance(error, dict) else {"message": str(error)}
                kind = failure_kind(
                    status, error.get("code"), error.get("param"), str(error.get("message", ""))
                )
                if kind == "context_length":
                    log.warning("batch request %s dropped (%s)", request.id, CONTEXT_LENGTH)
                    answers[i] = [Completion.refused(CONTEXT_LENGTH) for _ in range(request.n)]
                elif kind in ("auth", "shape") and status is not None:
                    refused.append(self.refusal(request, status, error, kind))
                else:
                    why = line.get("error") or error or response
                    failures.append(f"request {request.id or i}: {self.scrub(why)}")
        return answers, failures, refused
