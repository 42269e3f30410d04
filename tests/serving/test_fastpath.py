"""The predict fast path (serving.fastpath): the same answers as FastAPI's routes, byte for byte, for good
and bad requests alike; only well-formed requests skip FastAPI, and what they publish and record is the
routes' own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.types import Message, Receive, Scope, Send

from core.settings import FlywheelSettings
from serving.fastpath import PodApp, _read

from .conftest import read_topic, services


class _Counting:
    """Counts the requests that reach FastAPI's middleware stack."""

    def __init__(self, app: Any) -> None:
        self.app, self.calls = app, 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += scope["type"] == "http"
        await self.app(scope, receive, send)


def _requests(name: str) -> list[tuple[str, dict[str, Any]]]:
    v1 = f"/v1/models/{name}/predict"
    return [
        ("/predict", {"json": {"text": "I loved this movie", "user_id": "u1", "domain": "movies"}}),
        ("/predict", {"content": b'{"text": "json+"}', "headers": {"content-type": "application/vnd.x+json"}}),
        ("/predict", {"content": b'{"text": "charset"}',
                      "headers": {"content-type": "Application/JSON; charset=utf-8"}}),
        (v1, {"json": {"text": "by name"}}),
        ("/predict", {"json": {"text": ""}}),
        ("/predict", {"json": {"text": "   "}}),
        ("/predict", {"json": {"text": "x" * 5001}}),
        ("/predict", {"json": {}}),
        ("/predict", {"json": {"text": 3}}),
        ("/predict", {"json": {"text": "ok", "extra": 1}}),
        ("/predict", {"json": "not an object"}),
        ("/predict", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("/predict", {"content": b""}),
        ("/predict", {"content": b'{"text": "no content type"}'}),
        ("/predict", {"content": b'{"text": "form"}', "headers": {"content-type": "text/plain"}}),
        (v1, {"json": {"features": {"a": 1}}}),
        (v1, {"json": {"text": ""}}),
        ("/v1/models/nope/predict", {"json": {"text": "ok"}}),
        ("/v1/models/bad%20name/predict", {"json": {"text": "ok"}}),
    ]


def _answer(response: Any) -> tuple[int, str, bytes]:
    """Status, content type and body, the random prediction id blanked."""
    body = response.content
    if response.status_code == 200:
        body = body.replace(response.json()["prediction_id"].encode(), b"<id>")
    return response.status_code, response.headers["content-type"], body


@pytest.mark.usefixtures("champion")
def test_the_fast_path_answers_as_fastapi_does_and_only_well_formed_requests_skip_it(
        app_client: TestClient, settings: FlywheelSettings) -> None:
    app = app_client.app
    assert isinstance(app, PodApp) and app.fast_path
    assert services(app_client).runtime.wait_for(lambda d, _e: d.ready, 30)
    assert app_client.get("/ready").status_code == 200  # builds FastAPI's middleware stack
    counting = _Counting(app.middleware_stack)
    app.middleware_stack = counting  # type: ignore[assignment]

    fast, slow, reached = [], [], []
    for path, kwargs in _requests(settings.model_name):
        before = counting.calls
        app.fast_path = True
        fast.append(_answer(app_client.post(path, **kwargs)))
        reached.append(counting.calls - before)
        app.fast_path = False
        slow.append(_answer(app_client.post(path, **kwargs)))
    app.fast_path = True

    for (path, kwargs), a, b in zip(_requests(settings.model_name), fast, slow, strict=True):
        assert a == b, (path, kwargs, a, b)
    served = [status == 200 for status, _type, _body in fast]
    assert served == [True] * 4 + [False] * 15
    assert {status for status, _t, _b in fast[4:]} == {404, 422}
    # well-formed requests never reached FastAPI; every refused one was answered by it
    assert reached == [0 if ok else 1 for ok in served]
    assert all(json.loads(body)["error"] for status, _t, body in fast if status != 200)

    # both paths published every served prediction and counted it under the route's template
    records = read_topic(settings.kafka_connection(), settings.topics.predictions, 8)
    assert len({json.loads(r)["prediction_id"] for r in records}) == 8
    metrics = app_client.get("/metrics").text
    assert 'flywheel_serving_request_seconds_count{route="/predict",variant="champion"} 6.0' in metrics
    assert 'flywheel_serving_request_seconds_count{route="/v1/models/{name}/predict",variant="champion"} 2.0' \
        in metrics


def test_a_predict_before_the_champion_loads_gets_the_handlers_503(app_client: TestClient) -> None:
    """An error raised while serving is rendered by the app's own exception handlers."""
    answers = []
    for fast in (True, False):
        app_client.app.fast_path = fast  # type: ignore[attr-defined]
        answers.append(_answer(app_client.post("/predict", json={"text": "fine"})))
    assert answers[0] == answers[1] and answers[0][0] == 503
    assert json.loads(answers[0][2])["error"] == "not_ready"
    metrics = app_client.get("/metrics").text
    assert 'flywheel_serving_request_seconds_count{route="/predict",variant="none"} 2.0' in metrics


def test_a_body_in_chunks_is_read_whole_and_replayed_as_it_came() -> None:
    chunks: list[Message] = [{"type": "http.request", "body": b'{"te', "more_body": True},
                             {"type": "http.request", "body": b'xt": "a"}', "more_body": False},
                             {"type": "http.disconnect"}]

    async def run(limit: int | None) -> tuple[bytes | None, list[Message]]:
        queue = list(chunks)

        async def receive() -> Message:
            return queue.pop(0)

        body, replay = await _read({"type": "http"}, receive, limit)
        return body, [await replay() for _ in range(3)]

    body, replayed = asyncio.run(run(None))
    assert body == b'{"text": "a"}' and replayed == chunks
    over, replayed = asyncio.run(run(5))  # past the limit after the first chunk: FastAPI's limit answers
    assert over is None and replayed == chunks
