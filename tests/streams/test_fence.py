"""The fence inside the commit transaction, driven directly: replays are skipped, stored offsets never
move backwards, gaps are refused (review findings on the runtime)."""

from __future__ import annotations

import pytest

from core.db import session_connector
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from streams.exceptions import OffsetGap
from streams.ingest import IngestProcessor
from streams.runtime import ProcessorRunner, RunnerConfig
from tests.streams.helpers import count, prediction


class FakeMessage:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"


@pytest.fixture
def runner(settings: FlywheelSettings, kafka_conn: KafkaConnection, db_url: str) -> ProcessorRunner:  # type: ignore[type-arg]
    r: ProcessorRunner = ProcessorRunner(  # type: ignore[type-arg]
        IngestProcessor.from_settings(settings), RunnerConfig.from_settings(settings, kafka_conn),
        session_connector(db_url))
    r._cluster = "c1"
    return r


def test_replays_are_skipped_and_offsets_never_move_backwards(
    runner: ProcessorRunner, settings: FlywheelSettings, db_url: str  # type: ignore[type-arg]
) -> None:
    topic = settings.topics.predictions
    values = [prediction().to_json() for _ in range(30)]

    def commit(first: int, last: int) -> dict[tuple[str, int], int]:
        batch = runner._decode([FakeMessage(topic, o, values[o]) for o in range(first, last + 1)])  # type: ignore[list-item]
        return runner._commit(batch)[1]

    assert commit(0, 9) == {(topic, 0): 10}
    assert commit(10, 19) == {(topic, 0): 20}
    assert commit(0, 4) == {(topic, 0): 20}  # a replay re-read in another chunk: skipped, offset kept
    assert commit(5, 14) == {(topic, 0): 20}
    assert commit(20, 29) == {(topic, 0): 30}
    assert count(db_url, "SELECT count(*) FROM predictions") == 30
    assert count(db_url, "SELECT value FROM stream_counters WHERE name = %s", f"consumed:{topic}") == 30
    assert count(db_url, "SELECT value FROM stream_counters WHERE name = 'replayed'") == 15
    ahead = runner._decode([FakeMessage(topic, 35, prediction().to_json())])  # type: ignore[list-item]
    with pytest.raises(OffsetGap) as gap:  # 30..34 would be skipped: refused
        runner._commit(ahead)
    assert (gap.value.stored, gap.value.first) == (30, 35)
