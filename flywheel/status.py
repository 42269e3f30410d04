"""What ``flywheel status`` and ``flywheel topics lag`` report, collected without raising: an
unreachable broker or database becomes a line in the report, not a traceback."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from rich.console import Console
from rich.table import Table

from core import db
from core.exceptions import FlywheelError
from core.kafka import KafkaConnection
from core.settings import FlywheelSettings
from flywheel import migrate
from flywheel.endpoints import endpoint_connection, read_endpoints
from registry.deploys import DeploySummary, summaries
from streams import kafka


@dataclass(frozen=True)
class LagRow:
    topic: str
    partition: int
    next_offset: int
    high_watermark: int | None

    @property
    def lag(self) -> int | None:
        if self.high_watermark is None:
            return None
        return max(0, self.high_watermark - max(self.next_offset, 0))


def group_lag(kafka_conn: KafkaConnection, database_url: str, group: str) -> list[LagRow]:
    with db.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT topic, partition, next_offset FROM stream_offsets WHERE group_id = %s ORDER BY 1, 2", (group,)
        ).fetchall()
    marks = kafka.high_watermarks(kafka_conn, [(t, p) for t, p, _ in rows])
    return [LagRow(t, p, n, marks.get((t, p))) for t, p, n in rows]


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    lines: list[tuple[str, str]] = field(default_factory=list)
    groups: list[tuple[str, int, int | None, str]] = field(default_factory=list)
    counts: list[tuple[str, int]] = field(default_factory=list)
    deploys: list[DeploySummary] = field(default_factory=list)  # data-to-deploy per model

    @property
    def healthy(self) -> bool:
        return not self.problems


def collect(settings: FlywheelSettings) -> Report:
    report = Report()
    running = read_endpoints(settings)
    database = (settings.database_url.get_secret_value() if settings.database_url else None) or (
        running.database_url if running else None)
    report.lines.append(("local platform", f"running (pid {running.pid})" if running else "not running"))
    kafka_conn: KafkaConnection | None = None
    if not settings.kafka_bootstrap and running is None:
        report.problems.append("broker: not configured (FLYWHEEL_KAFKA_BOOTSTRAP) and no local platform running")
    else:
        try:
            kafka_conn = endpoint_connection(settings, running)
            topics = kafka.list_topics(kafka.admin(kafka_conn), timeout=5)
            ours = [t for t in topics if t.name.startswith(settings.topic_prefix + ".")]
            report.lines.append(("broker", f"{kafka_conn.bootstrap_servers}: {len(topics)} topics "
                                           f"({len(ours)} Flywheel)"))
        except FlywheelError as exc:
            where = kafka_conn.bootstrap_servers if kafka_conn else settings.kafka_bootstrap or "(settings)"
            report.problems.append(f"broker {where}: {exc}")
    if database is None:
        report.problems.append("database: not configured (FLYWHEEL_DATABASE_URL) and no local platform running")
        return report
    try:
        _collect_db(report, database, kafka_conn)
    except (FlywheelError, psycopg.Error) as exc:
        report.problems.append(f"database: {' '.join(str(exc).split())}")
    return report


def _collect_db(report: Report, database: str, kafka_conn: KafkaConnection | None) -> None:
    revision, head = migrate.current_revision(database), migrate.head_revision(database)
    report.lines.append(("database", f"revision {revision}" + ("" if revision == head else f" (head is {head})")))
    if revision is None:
        report.problems.append("database: not migrated; run `flywheel db upgrade`")
        return
    with db.connect(database) as conn:
        groups = conn.execute(
            "SELECT group_id, count(*), max(updated_at) FROM stream_offsets GROUP BY 1 ORDER BY 1").fetchall()
        for name, q in (
            ("predictions", "SELECT count(*) FROM predictions"),
            ("feedback joined", "SELECT count(*) FROM feedback WHERE status = 'joined'"),
            ("feedback pending", "SELECT count(*) FROM feedback WHERE status = 'pending'"),
            ("feedback orphan", "SELECT count(*) FROM feedback WHERE status = 'orphan'"),
            ("dead letters", "SELECT count(*) FROM dead_letters"),
        ):
            row = conn.execute(q).fetchone()
            report.counts.append((name, int(row[0]) if row else 0))
        for reason, n in conn.execute("SELECT reason, count(*) FROM dead_letters GROUP BY 1 ORDER BY 2 DESC"):
            report.counts.append((f"  dead letters: {reason}", int(n)))
        dups = conn.execute(
            "SELECT coalesce(sum(value), 0) FROM stream_counters WHERE name LIKE 'duplicates:%'").fetchone()
        report.counts.append(("duplicates dropped", int(dups[0]) if dups else 0))
        report.deploys = deploy_summaries(conn)
    for group, partitions, updated in groups:
        lag = None
        if kafka_conn is not None:
            try:
                rows = group_lag(kafka_conn, database, group)
                lag = sum(r.lag or 0 for r in rows)
            except FlywheelError:
                lag = None
        report.groups.append((group, int(partitions), lag, updated.isoformat(timespec="seconds")))


def deploy_summaries(conn: psycopg.Connection[tuple[object, ...]]) -> list[DeploySummary]:
    """Data-to-deploy per model from the platform's own record (none before migration 0012)."""
    found = conn.execute("SELECT to_regclass('feedback_served') IS NOT NULL").fetchone()
    return list(summaries(conn).values()) if found and found[0] else []


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def render(console: Console, report: Report) -> None:
    table = Table(show_header=False, title="Flywheel status")
    for key, value in report.lines:
        table.add_row(key, value)
    for problem in report.problems:
        table.add_row("[red]problem[/]", f"[red]{problem}[/]")
    console.print(table)
    if report.groups:
        groups = Table("processor group", "partitions", "lag", "last commit")
        for group, partitions, lag, updated in report.groups:
            groups.add_row(group, str(partitions), "?" if lag is None else str(lag), updated)
        console.print(groups)
    if report.counts:
        counts = Table("rows", "count")
        for name, n in report.counts:
            counts.add_row(name, str(n))
        console.print(counts)
    if report.deploys:
        deploys = Table("model", "events", "p50", "p95", "versions", "last first serve",
                        title="Data-to-deploy: feedback event -> first prediction of a version trained on it")
        for d in report.deploys:
            deploys.add_row(d.model, str(d.events), _duration(d.p50_s), _duration(d.p95_s), str(d.versions),
                            d.last_served_at.isoformat(timespec="seconds") if d.last_served_at else "-")
        console.print(deploys)
    if not report.healthy:
        raise SystemExit(1)
