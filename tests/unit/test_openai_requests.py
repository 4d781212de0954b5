"""The requests OpenAIBackend builds, checked by the contract server's rules
(tests/openai_contract.py, written from OpenAI's documentation) without a server: which model
takes which response format, the paper config's every teacher request, and how the backend
classifies each refusal the rules produce."""

from __future__ import annotations

from typing import Any

import pytest

from speed.llm.factory import backend_options, register_backend, unregister_backend
from speed.llm.openai_backend import Admit, OnAnswer, OpenAIBackend, failure_kind
from speed.llm.types import Completion, Request, Sampling
from speed.plan import load_config
from speed.prompts.families import output_schema
from speed.workflow import teacher_spec
from tests.openai_contract import MODELS, Refusal, check_request
from tests.teacher_stages import STAGES, params_from, run_stage, write_inputs

KEY_ENV = "SPEED_TEST_CONTRACT_KEY"
MODES = ("json_schema", "json_object", "none")
STRUCTURED = ["gpt-4o-2024-08-06", "gpt-4o-mini", "gpt-4.1", "gpt-4o-2024-11-20"]
JSON_MODE_ONLY = ["gpt-4o-2024-05-13", "gpt-4-turbo", "gpt-3.5-turbo-1106"]


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-unit-test-key-0000")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unit-test-key-0000")


def body(model: str, mode: str, prompt: str = "Write one example.") -> dict[str, Any]:
    request = Request.chat(
        [{"role": "user", "content": prompt}],
        Sampling(max_tokens=256, seed=3),
        schema=output_schema("retrieval", 500),
    )
    return OpenAIBackend(model, None, KEY_ENV, response_format=mode)._body(request)


def refusal(body: dict[str, Any]) -> Refusal | None:
    try:
        check_request(body)
    except Refusal as err:
        return err
    return None


@pytest.mark.parametrize("model", STRUCTURED + JSON_MODE_ONLY)
@pytest.mark.parametrize("mode", MODES)
def test_which_model_takes_which_response_format(model, mode):
    refused = refusal(body(model, mode))
    if mode == "json_schema" and model in JSON_MODE_ONLY:
        assert refused is not None and refused.status == 400
        assert refused.param == "response_format" and "json_schema" in refused.message
        assert failure_kind(400, refused.code, refused.param, refused.message) == "shape"
    else:
        assert refused is None, refused and refused.message


def test_json_mode_needs_the_word_json_and_the_backend_always_has_it():
    plain = body("gpt-4o-2024-05-13", "json_object", prompt="Write one example.")
    assert refusal(plain) is None
    assert "JSON Schema" in plain["messages"][0]["content"]
    bare = {**plain, "messages": [{"role": "user", "content": "Write one example."}]}
    refused = refusal(bare)
    assert refused is not None and refused.param == "messages" and "json" in refused.message


def test_the_full_schema_as_sent_before_is_refused():
    old = body("gpt-4o-2024-08-06", "json_schema")
    old["response_format"]["json_schema"]["schema"] = output_schema("retrieval", 500)
    refused = refusal(old)
    assert refused is not None and refused.status == 400 and refused.param == "response_format"
    assert "'minLength' is not permitted" in refused.message


def test_models_without_json_mode_and_reasoning_models():
    refused = refusal(body("gpt-4", "json_object"))
    assert refused is not None and refused.param == "response_format"
    assert refusal(body("gpt-4", "none")) is None
    # The backend sends max_tokens, which reasoning models refuse: the job stops, naming it.
    refused = refusal(body("o3-mini", "json_schema"))
    assert refused is not None and refused.param == "max_tokens"
    assert refused.code == "unsupported_parameter"
    assert failure_kind(400, refused.code, refused.param, refused.message) == "shape"
    unknown = refusal(body("gpt-4o-2099-01-01", "json_schema"))
    assert unknown is not None and (unknown.status, unknown.code) == (404, "model_not_found")
    assert failure_kind(404, unknown.code, unknown.param, unknown.message) == "shape"


def test_the_refusals_the_backend_must_tell_apart():
    too_long = {"status": 400, "code": "context_length_exceeded", "param": "messages"}
    assert failure_kind(**too_long, message="...") == "context_length"
    assert failure_kind(400, None, None, "This model's maximum context length is 2048") == (
        "context_length"
    )
    assert failure_kind(401, "invalid_api_key", None, "Incorrect API key") == "auth"
    assert failure_kind(403, None, None, "Country not supported") == "auth"
    assert failure_kind(400, "content_filter", "messages", "flagged") == "request"
    assert failure_kind(429, "rate_limit_exceeded", None, "slow down") == "request"
    assert failure_kind(500, None, None, "boom") == "request"


class Capture(OpenAIBackend):
    """The paper config's backend, sending nothing: it keeps each body it would send."""

    bodies: list[dict[str, Any]] = []

    def stream(self, requests: list[Request], on_answer: OnAnswer, admit: Admit = None) -> None:
        # LLMClient streams from an OpenAI backend: this is the call it makes.
        for pos, request in enumerate(requests):
            if admit is not None and not admit(pos):
                return
            Capture.bodies.append(self._body(request))
            on_answer(pos, [Completion("{}", "stop", 10, 2)] * request.n)


@pytest.mark.parametrize(
    ("model", "mode"), [(None, None), ("gpt-4o-2024-08-06", "json_schema"), ("gpt-4", "none")]
)
def test_the_paper_configs_teacher_requests_pass_the_contract(tmp_path, model, mode):
    """Every teacher stage with the paper config's parameters and teacher (None: as shipped,
    gpt-4o-2024-05-13 in JSON mode; then the later snapshot with structured outputs, and a model
    without either): each request the backend would send passes OpenAI's checks."""
    config = load_config("config/paper.yaml")
    if model is not None:
        config["teacher"]["model"] = model
        config["teacher"]["openai"]["response_format"] = mode
    spec = {**teacher_spec(config), "backend": "capture"}
    register_backend(
        "capture", lambda s: Capture(s["model"], **backend_options("openai", s["options"]))
    )
    Capture.bodies = []
    params = params_from(config)
    inputs = write_inputs(tmp_path / "in", params, n=12)
    try:
        for stage in STAGES:
            run_stage(stage, spec, tmp_path, params, inputs)
    finally:
        unregister_backend("capture")
    formats = {b.get("response_format", {}).get("type") for b in Capture.bodies}
    expected = {None: "json_object", "json_schema": "json_schema", "none": None}[mode]
    assert formats == {expected}
    assert len(Capture.bodies) == 2 + 12 * 4  # 2 topics (one family), 12 prompts x 4 stages
    for sent in Capture.bodies:
        assert sent["model"] == config["teacher"]["model"] in MODELS
        assert refusal(sent) is None, refusal(sent).message
