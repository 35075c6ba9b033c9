"""A remote PRM's failures become the errors a local PRM gives: too long an input
is `ScorerInputTooLong` (400 on /v1/rewards), a refused input keeps its 4xx, an
unreachable or failing server is a 503."""

from __future__ import annotations

import httpx
import pytest

from openr.contracts import ScorerError, ScorerInputTooLong
from openr.prm.remote import VLLMPoolingPRM, connect_remote_prm
from tests.support.app_client import serving

QUESTION = "What is 2 + 3?"


def pooling_prm(handler) -> VLLMPoolingPRM:
    prm = VLLMPoolingPRM("http://vllm.test", model="prm")
    prm.client = httpx.Client(transport=httpx.MockTransport(handler))
    return prm


def test_pooling_rows_map_back_to_steps_as_p_label_1():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"index": 0, "data": [[0.9, 0.1], [0.25, 0.75]]}]})

    assert pooling_prm(handler).score_batch([(QUESTION, ["2 + 3 = 5", "The answer is 5"])]) == [[0.1, 0.75]]
    body = httpx.Request("POST", "/", content=seen[0].content).read()
    assert seen[0].url.path == "/pooling" and b"2 + 3 = 5<extra_0>The answer is 5<extra_0>" in body


@pytest.mark.parametrize("status, body, raised, status_seen", [
    (400, {"error": {"message": "This model's maximum context length is 512 tokens.", "code": 400}},
     ScorerInputTooLong, None),
    (400, {"error": {"message": "messages: field required"}}, ScorerError, 400),
    (500, {"error": {"message": "engine dead"}}, ScorerError, 503),
    (401, {"error": {"message": "bad key"}}, ScorerError, 503),
])
def test_remote_errors_map_to_the_local_ones(status, body, raised, status_seen):
    prm = pooling_prm(lambda request: httpx.Response(status, json=body))
    with pytest.raises(raised) as err:
        prm.score_batch([(QUESTION, ["2 + 3 = 5"])])
    if status_seen:
        assert err.value.status == status_seen


def test_a_step_count_mismatch_is_an_error_not_a_misaligned_score():
    prm = pooling_prm(lambda request: httpx.Response(200, json={"data": [{"index": 0, "data": [[0.5, 0.5]]}]}))
    with pytest.raises(ScorerError, match="1 step scores for 2 steps"):
        prm.score_batch([(QUESTION, ["a", "b"])])


def test_unreachable_at_start_up_is_a_value_error_naming_the_flag():
    with pytest.raises(ValueError, match="--prm-api"):
        connect_remote_prm("http://127.0.0.1:9/v1")


@pytest.mark.anyio
async def test_rewards_answers_503_when_the_remote_prm_is_down():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    async with serving(prm_factory=lambda: pooling_prm(refuse)) as (http, _, _):
        r = await http.post("/v1/rewards", json={"question": QUESTION, "candidates": [["2 + 3 = 5"]]})
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "prm_unavailable" and "unreachable" in r.json()["error"]["message"]
