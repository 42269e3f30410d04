"""A serving pod with a minilm-head champion runs the artifact's ONNX encoder and never imports torch
(checked in a pod process of its own: this test process has torch), answering what torch answers; an
``int8-pc`` champion runs its quantised graph, answering what the trainer's process computes with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from core.settings import FlywheelSettings
from flywheel.lifecycle import lifecycle
from kinds import Embedder, MemoryEmbeddingCache, MiniLMHead, load_model, shared_encoder
from tests.trainer.lifecycle_helpers import rows

from .test_batching import LENIENT

ROOT = Path(__file__).resolve().parents[2]
POD = textwrap.dedent("""
    import json, sys
    from fastapi.testclient import TestClient
    from core.settings import FlywheelSettings
    from serving import create_app

    values, texts, version = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
    app = create_app(FlywheelSettings(**values), database_url=values["database_url"])
    with TestClient(app) as client:
        runtime = client.app.state.services.runtime
        assert runtime.wait_live(version, 120)
        answers = [client.post("/predict", json={"text": t}).json() for t in texts]
        encoder = runtime.deployment.champion.model.embedder.encoder
        encoder = [type(encoder).__name__, encoder.encoder_id, encoder.batch_size]
    heavy = sorted(m for m in ("torch", "transformers", "sklearn") if m in sys.modules)
    print(json.dumps({"answers": answers, "encoder": encoder, "heavy": heavy}))
""")


@pytest.mark.parametrize("precision", ["fp32", "int8-pc"])
def test_a_minilm_pod_runs_onnx_without_torch_and_answers_what_torch_answers(
        settings: FlywheelSettings, db_url: str, precision: str) -> None:
    config = LENIENT.model_copy(update={"policy": LENIENT.policy.model_copy(
        update={"kind_params": {"minilm-head": {"precision": precision}}})})
    with lifecycle(settings, settings.kafka_connection(), db_url, config) as lc:
        result = lc.trainer.bootstrap(rows("vader_movies")[:300], source="vader_movies.csv", kind="minilm-head")
        assert result.status == "promoted", result.reason
        info = lc.registry.champion()
        assert info is not None
        directory = Path(lc.registry.fetch(info.version))
    texts = [r.text for r in rows("vader_tweets")[:40]]
    values = {"kafka_bootstrap": settings.kafka_bootstrap, "database_url": db_url,
              "topic_prefix": settings.topic_prefix, "data_dir": str(settings.data_dir), "metrics_port": 0,
              "schema_registry_port": 0, "model_name": settings.model_name}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    found = subprocess.run([sys.executable, "-c", POD, json.dumps(values), json.dumps(texts), info.version],
                           capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=300)
    assert found.returncode == 0, found.stderr[-3000:]
    pod = json.loads(found.stdout.strip().splitlines()[-1])
    name, encoder_id, batch_size = pod["encoder"]
    assert name == "OnnxEncoder" and encoder_id.endswith(":int8-pc") == (precision == "int8-pc")
    assert batch_size == (1 if precision == "int8-pc" else 64)  # a quantised graph: one text a call
    assert pod["heavy"] == [], pod["heavy"]  # no torch, no transformers, no scikit-learn in the pod

    alone = load_model(directory)  # torch (fp32), or the artifact's quantised graph (int8-pc), in this process
    assert isinstance(alone, MiniLMHead)
    alone.use(Embedder(shared_encoder(), MemoryEmbeddingCache(0)))
    want = alone.predict_proba(texts)
    for answer, row in zip(pod["answers"], want, strict=True):
        assert answer["version"] == info.version
        assert answer["label"] == alone.labels[int(np.argmax(row))]
        got = np.array([answer["probabilities"][label] for label in alone.labels])
        assert np.abs(got - row).max() < 1e-5
