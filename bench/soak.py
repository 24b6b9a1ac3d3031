"""``bench/run.py --soak``: constant announce load for 10 minutes; does the table stay bounded?

PostgreSQL (Redis for rate limits), the default ip_match settings except the trusted proxy
(announcements live ``IP_MATCH_ANNOUNCE_TTL`` = 30 s after the last announce, 45 s at
most with the last-seen write interval, default rate limits and household
caps: each printer has its own address and announces every poll interval, 5 s). Printers
come and go: at any time ``rate × 5 s`` printers announce, and each is replaced by a new one
after a minute, so without the purge the table would grow by that many rows a minute.
Every 30 s the row counts are sampled on a separate connection.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench import loadgen
from bench import server as bench_server
from bench.loadgen import Request, json_body
from bench.world import REDIS_SETTINGS, device_address, world

POLL_INTERVAL = 5  # the default IP_MATCH_POLL_INTERVAL
GENERATION_SECONDS = 60
SAMPLE_SECONDS = 30
SOAK_SETTINGS = {"TRUSTED_PROXIES": "127.0.0.1/32", "PROXY_FIX_X_FOR": 1,
                 "LOG_LEVEL": "WARNING", **REDIS_SETTINGS}


def announce_schedule(rate: float, seconds: float) -> list[Request]:
    """Slot i (due at i / rate): the printer whose turn it is, every POLL_INTERVAL seconds.

    ``rate × POLL_INTERVAL`` printers announce at a time; each place is taken by a new
    printer every GENERATION_SECONDS, the places staggered so that printers come and go at
    an even pace (a few new ones every second) rather than all at once.
    """
    live = max(1, round(rate * POLL_INTERVAL))
    requests = []
    for slot in range(int(rate * seconds)):
        place = slot % live
        generation = int((slot / rate + place * GENERATION_SECONDS / live) // GENERATION_SECONDS)
        printer = generation * live + place
        secret = hashlib.sha256(f"soak {printer}".encode()).hexdigest()
        requests.append(Request("POST", "/api/v1/discovery/announce", json_body({
            "device_id": f"soak-printer-{printer:07d}", "device_secret": secret,
            "name": f"Soak {printer}", "model": "Bench MK1", "agent_version": "1.0"}),
            (("X-Forwarded-For", device_address(printer)),
             ("Content-Type", "application/json"))))
    return requests


@dataclass
class RowCount:
    elapsed: float
    announcements: int
    live: int
    offers: int
    audit: int
    updates: int  # rows updated in ip_match_announcements so far (pg_stat)


COUNTS = text("""
    SELECT (SELECT count(*) FROM ip_match_announcements),
           (SELECT count(*) FROM ip_match_announcements
             WHERE last_seen_at > (now() at time zone 'utc') - interval '45 seconds'),
           (SELECT count(*) FROM ip_match_offers),
           (SELECT count(*) FROM audit_events),
           (SELECT coalesce(n_tup_upd, 0) FROM pg_stat_user_tables
             WHERE relname = 'ip_match_announcements')
""")


def run(args) -> None:
    minutes, rate = args.soak_minutes, args.soak_rate
    seconds = minutes * 60
    with world("postgresql", 0, seeded=False) as w, bench_server.gunicorn(
            w.directory / "server", database_url=w.url,
            settings={**SOAK_SETTINGS, "SECRET_KEY": w.secret_key,
                      "RATELIMIT_KEY_PREFIX": f"tsd-soak-{w.secret_key[:8]}"}) as server:
        file = loadgen.write_requests(w.directory / "soak.requests",
                                      announce_schedule(rate, seconds))
        engine = create_engine(w.url, pool_size=1)
        command = [sys.executable, "-m", "bench.openloop", server.base_url, str(file),
                   f"--rate={rate}", f"--seconds={seconds}"]
        started = time.monotonic()
        generator = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,  # noqa: S603
                                     cwd=loadgen.ROOT)
        samples: list[RowCount] = []
        while generator.poll() is None:
            time.sleep(min(SAMPLE_SECONDS, max(0.5, seconds + 5 - (time.monotonic() - started))))
            with engine.connect() as connection:
                row = connection.execute(COUNTS).one()
            samples.append(RowCount(time.monotonic() - started, *row))
            print(f"  {samples[-1].elapsed:6.0f} s: {row[0]} announcements ({row[1]} live), "
                  f"{row[2]} offers, {row[3]} audit rows", flush=True)
        output = generator.communicate()[0]
        engine.dispose()
    result = loadgen.LoadResult(**json.loads(output.strip().splitlines()[-1]))
    print("\n".join(soak_report(samples, result, rate, minutes)))


def soak_report(samples: list[RowCount], result: loadgen.LoadResult, rate: float,
                minutes: float) -> list[str]:
    live = round(rate * POLL_INTERVAL)
    lines = [f"Soak: {rate:g} announces/s for {minutes:g} min; {live} printers announcing at a "
             f"time, each replaced by a new one after {GENERATION_SECONDS} s (unpurged, the "
             f"table would grow by {live} rows a minute).", "",
             "| elapsed (s) | announcement rows | live | offers | audit rows |",
             "|---:|---:|---:|---:|---:|"]
    lines += [f"| {s.elapsed:.0f} | {s.announcements:,} | {s.live:,} | {s.offers} | "
              f"{s.audit:,} |" for s in samples]
    writes = samples[-1].updates if samples else 0
    lines += ["", f"Answers: {result.counts}; errors {result.errors or 'none'}; "
              f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; most announcement "
              f"rows {max(s.announcements for s in samples):,}; last-seen writes: "
              f"{writes:,} for {result.requests:,} announces "
              f"({writes / max(result.requests, 1):.0%})."]
    return lines
