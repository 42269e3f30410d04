"""Durability benchmark (issue 21): nothing acknowledged is ever lost by a stop, restart or crash of `up`.

An idempotent acks=all producer sends feedback events at a fixed rate to `flywheel up` (durable embedded
broker on a fixed port, the producer reads the address once); `up` is stopped with SIGTERM, then killed
with SIGKILL, mid-stream, and started again each time; at the end the benchmark waits until every
acknowledged event is in Postgres and checks each landed exactly once.

    python bench/durability.py [--events 20000] [--rate 1000] [--stops TERM@5,KILL@12]

Uses FLYWHEEL_DATABASE_URL's server (else the local Postgres on 127.0.0.1:5432, else pgserver) for a fresh
database. The last line printed is JSON:
{"acknowledged": N, "landed": L, "lost": 0, "duplicated": 0, "stops": K, "landed_per_s": X}
(landed_per_s: acknowledged events landed per second from the first event sent until the last landed,
stops included).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/durability.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import signal
import tempfile

from bench._host import HostProbe, emit
from bench._stack import bench_stack
from flywheel.stack import free_port
from tests.flywheel.durability import run


def _stops(text: str) -> list[tuple[float, signal.Signals]]:
    stops = []
    for part in text.split(","):
        name, _, at = part.partition("@")
        stops.append((float(at), signal.Signals[f"SIG{name.strip().upper()}"]))
    return sorted(stops)


def main() -> None:
    probe = HostProbe()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--stops", type=_stops, default=_stops("TERM@5,KILL@12"),
                        help="signal@seconds after the first event, comma-separated (default TERM@5,KILL@12)")
    parser.add_argument("--fsync", action="store_true", help="FLYWHEEL_BROKER_FSYNC=true")
    args = parser.parse_args()
    os.environ.pop("FLYWHEEL_KAFKA_BOOTSTRAP", None)  # the point is the embedded broker of `up`
    with bench_stack(broker=None) as (_no_broker, url), tempfile.TemporaryDirectory() as workdir:
        extra = {"FLYWHEEL_BROKER_FSYNC": "true"} if args.fsync else {}
        result = run(Path(workdir), url, free_port(), rate=args.rate, seconds=args.events / args.rate,
                     stops=args.stops, land_timeout=300, **extra)
        for line in (Path(workdir) / "up.log").read_text().splitlines():
            if any(word in line for word in ("SIGTERM", "drained", "not landed", "moved back", "stopped in",
                                             "stopped cleanly")):
                print(line[:300])
    print(f"sent {result['sent']}, delivery errors {result['delivery_errors']}, exits of up {result['exit_codes']}, "
          f"landed without an acknowledgement {result['landed_unacknowledged']}, redelivered records recognised by "
          f"ingest {result['redelivered']}")
    emit({k: result[k] for k in ("acknowledged", "landed", "lost", "duplicated", "stops",
                                             "landed_per_s")}, probe)


if __name__ == "__main__":
    main()
