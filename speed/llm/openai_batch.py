"""The same teacher requests sent through OpenAI's Batch API: half the price of synchronous calls,
answered within a completion window (up to 24 h) instead of seconds.

A job's requests go out as JSONL files of at most `max_requests` lines (OpenAI's limit: 50,000)
and `max_file_bytes` (kept under OpenAI's 200 MB), all submitted at once. Each batch is recorded
under `state_dir` the moment it is created, with a key per line (the server, the request body,
and which repeat of an identical body it is). A rerun (after a kill, a wall-time limit or a
failure) looks its requests up line by line in the records and asks the server about each
recorded batch that holds some of them:
- still running (`validating`, `in_progress`, `finalizing`, `cancelling`): its lines are waited
  for, never sent again, whatever else changed (another `max_requests`, a budget that lets more
  requests through, requests added to the job);
- ended (`completed`, `expired`, `cancelled`, `failed`) with answers: those are taken (free: the
  files are already paid for), its other lines are sent again;
- ended without any answer, or unknown to the server (404: deleted, or another organization's):
  its record is dropped and its lines are sent again.
Whatever no recorded batch answers or holds goes out in new batches, under the same limits.
Answers are read from the output and error files; requests that failed or expired in this run
are handed up with the answered ones (which the client caches) and the job stops with the count:
the rerun submits only what is still missing. Error lines follow the synchronous backend's
rules: a line refused as longer than the context is dropped (`context_length`), a line refused
for its shape or key stops the job with the server's message (a rerun would be refused alike).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from speed.io import atomic_file
from speed.llm.openai_backend import OpenAIBackend, TeacherAPIError, failure_kind
from speed.llm.types import CONTEXT_LENGTH, Completion, Request

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
MAX_REQUESTS = 50_000  # OpenAI: requests per batch
MAX_FILE_BYTES = 190_000_000  # OpenAI takes batch input files up to 200 MB
WAITING = {"validating", "in_progress", "finalizing", "cancelling"}

# A batch and the lines of it this call wants: custom_id -> position in the call's requests.
Claim = tuple[Any, dict[int, int]]


class OpenAIBatchBackend(OpenAIBackend):
    # The client hands over a whole job at once: batches of many requests are the point.
    chunk_size = sys.maxsize
    stream = None  # type: ignore[assignment]  # a batch answers as a whole: LLMClient commits it in one chunk

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key_env: str,
        state_dir: str | Path,
        completion_window: str = "24h",
        poll_s: float = 60.0,
        max_requests: int = MAX_REQUESTS,
        max_file_bytes: int = MAX_FILE_BYTES,
        **options: Any,
    ):
        if not 1 <= max_requests <= MAX_REQUESTS:
            raise ValueError(f"max_requests is {max_requests}; OpenAI takes 1 to 50,000 a batch")
        if not 0 < max_file_bytes <= MAX_FILE_BYTES:
            raise ValueError(f"max_file_bytes is {max_file_bytes}; at most {MAX_FILE_BYTES}")
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

    def line_keys(self, requests: list[Request]) -> list[str]:
        """What names each request's line across runs. Identical bodies (unseeded samples of one
        prompt) are told apart by their repeat number, so each gets its own answer."""
        repeats: Counter[str] = Counter()
        keys = []
        for request in requests:
            body = json.dumps(self._body(request), sort_keys=True)
            repeats[body] += 1
            blob = f"{self.where}\n{repeats[body]}\n{body}".encode()
            keys.append(hashlib.sha256(blob).hexdigest()[:32])
        return keys

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        from openai import APIError

        done: dict[int, list[Completion]] = {}
        errors: list[str] = []
        refused: list[TeacherAPIError] = []
        failed: list[TeacherAPIError] = []
        try:
            with self._client(asynchronous=False) as client:
                keys = self.line_keys(requests)
                claims = self._recorded(client, requests, keys, done)
                held = set(done).union(*(lines.values() for _b, lines in claims))
                todo = [p for p in range(len(requests)) if p not in held]
                for part in self.parts([requests[p] for p in todo]):
                    claims.append(self._submit(client, [todo[j] for j in part], requests, keys))
                for batch, lines in claims:
                    try:
                        batch = self._wait(client, batch)
                    except TeacherAPIError as err:  # refused whole: a rerun submits it anew
                        failed.append(err)
                        continue
                    wanted = {c: requests[p] for c, p in lines.items()}
                    answers, failures, stops = self._collect(client, batch, wanted)
                    done.update({lines[c]: out for c, out in answers.items()})
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
        if failed:
            raise TeacherAPIError(f"{failed[0]}; a rerun submits its requests again", done)
        if errors:
            raise TeacherAPIError(
                f"{len(errors)} of {len(requests)} batch requests at {self.where} got no answer "
                f"(first: {errors[0]}); the answered ones are kept, a rerun submits the rest",
                done,
            )
        return [done[i] for i in range(len(requests))]

    def _records(self, keys: list[str]) -> list[tuple[Path, dict[str, Any], dict[int, int]]]:
        """The records holding some of these lines, each with those lines (custom_id ->
        position)."""
        wanted = {k: p for p, k in enumerate(keys)}
        found = []
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except FileNotFoundError:  # dropped by a concurrent job
                continue
            lines = {c: wanted[k] for c, k in enumerate(record.get("lines", ())) if k in wanted}
            if lines:
                found.append((path, record, lines))
        return found

    def _recorded(
        self, client: Any, requests: list[Request], keys: list[str], done: dict[int, Any]
    ) -> list[Claim]:
        """What earlier runs' batches still give: the answers of the ended ones go to `done`,
        the running ones are returned with the lines they hold that nothing answered yet. The
        records of batches that ended without an answer or that the server forgot are dropped."""
        from openai import NotFoundError

        running: list[Claim] = []
        for path, record, lines in self._records(keys):
            try:
                batch = client.batches.retrieve(record["batch_id"])
            except NotFoundError:
                log.warning(
                    "batch %s is unknown to %s: record dropped", record["batch_id"], self.where
                )
                path.unlink(missing_ok=True)
                continue
            if batch.status in WAITING:
                running.append((batch, lines))
            elif not _answered(batch):
                log.warning(
                    "batch %s ended %s with no answer: record dropped", batch.id, batch.status
                )
                path.unlink(missing_ok=True)
            else:
                wanted = {c: requests[p] for c, p in lines.items() if p not in done}
                answers, _failures, _stops = self._collect(client, batch, wanted)  # sent anew
                done.update({lines[c]: out for c, out in answers.items()})
                log.info("batch %s (%s): %d answers taken", batch.id, batch.status, len(answers))
        claims: list[Claim] = []
        taken = set(done)
        for batch, lines in running:
            mine = {c: p for c, p in lines.items() if p not in taken}
            if mine:
                log.info(
                    "resuming batch %s (%s) for %d requests", batch.id, batch.status, len(mine)
                )
                claims.append((batch, mine))
                taken.update(mine.values())
        return claims

    def _submit(
        self, client: Any, positions: list[int], requests: list[Request], keys: list[str]
    ) -> Claim:
        """A new batch of the requests at `positions`, recorded before any wait."""
        lines = [
            {
                "custom_id": str(c),
                "method": "POST",
                "url": ENDPOINT,
                "body": self._body(requests[p]),
            }
            for c, p in enumerate(positions)
        ]
        data = "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode()
        digest = hashlib.sha256(f"{self.where}\n".encode() + data).hexdigest()[:32]
        upload = client.files.create(file=(f"speed-{digest}.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint=ENDPOINT,
            completion_window=self.completion_window,
            metadata={"speed_input": digest},
        )
        # Recorded before any wait: from here on the batch is being paid for.
        record = self.state_dir / f"{digest}.json"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(record) as f:
            json.dump(
                {
                    "batch_id": batch.id,
                    "input_file_id": upload.id,
                    "n": len(lines),
                    "lines": [keys[p] for p in positions],
                },
                f,
            )
        log.info("submitted batch %s of %d requests (record %s)", batch.id, len(lines), record)
        return batch, dict(enumerate(positions))

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
        self, client: Any, batch: Any, requests: dict[int, Request]
    ) -> tuple[dict[int, list[Completion]], list[str], list[TeacherAPIError]]:
        """Answers of the wanted lines by custom_id (dropped ones included), one message per
        request without an answer, and the refusals that stop the job."""
        from openai.types.chat import ChatCompletion

        lines: dict[int, dict[str, Any]] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                for raw in client.files.content(file_id).text.splitlines():
                    if raw.strip():
                        line = json.loads(raw)
                        lines[int(line["custom_id"])] = line
        answers, failures, refused = {}, [], []
        for i, request in requests.items():
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


def _answered(batch: Any) -> bool:
    """Whether an ended batch holds any answer (the output file has the successful lines)."""
    counts = batch.request_counts
    return bool(batch.output_file_id) and (counts is None or counts.completed > 0)
