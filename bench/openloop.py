"""Open-loop load at a fixed rate: ``python -m bench.openloop URL FILE --rate R --seconds S``.

Request i is due at start + i / rate and is sent then (or at once, if the generator is
behind), on its own connection (gunicorn's sync workers close every connection anyway).
Its latency runs from the moment it was due to the last byte of the answer, so a server
that falls behind shows it in the latency, however the generator is scheduled. The
generator's own lateness (``max_send_lag_ms``) and achieved rate (``sent_rate``) are
reported too: they prove it kept up. Prints one JSON line (bench.loadgen.LoadResult).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loadgen import percentile  # noqa: E402

ERROR_CODE = re.compile(rb'"error"\s*:\s*"([A-Za-z0-9_]+)"')
TIMEOUT = 10.0


def build(line: str, host: str) -> bytes:
    method, path, body, *headers = line.rstrip("\n").split("\t")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close", *headers]
    payload = body.encode("utf-8")
    if payload or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload


async def exchange(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        body = await (reader.readexactly(int(match.group(1))) if match else reader.read())
        return status, body
    finally:
        writer.close()


async def run(url: str, lines: list[str], rate: float, seconds: float, offset: int) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    raws = [build(line, f"{host}:{port}") for line in lines]
    loop = asyncio.get_running_loop()
    total = max(1, int(rate * seconds))
    latencies: list[float] = []
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    pending: set[asyncio.Task] = set()

    async def one(index: int, due: float) -> None:
        try:
            status, body = await asyncio.wait_for(
                exchange(host, port, raws[(offset + index) % len(raws)]), TIMEOUT)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
            errors[type(error).__name__] += 1
            return
        latencies.append(loop.time() - due)
        key = str(status)
        if status >= 400 and (match := ERROR_CODE.search(body)):
            key += ":" + match.group(1).decode()
        counts[key] += 1

    start = loop.time() + 0.05
    max_lag = 0.0
    last_sent = start
    for index in range(total):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        last_sent = loop.time()
        max_lag = max(max_lag, last_sent - due)
        task = asyncio.create_task(one(index, due))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.wait(pending)
    latencies.sort()
    sent_span = max(last_sent - start, 1e-9)
    return {
        "requests": len(latencies), "seconds": total / rate,
        "p50_ms": percentile(latencies, 0.50) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000,
        "counts": dict(counts), "errors": dict(errors), "target_rate": rate,
        "sent_rate": (total - 1) / sent_span if total > 1 else rate,
        "max_send_lag_ms": max_lag * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("requests_file", type=Path)
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--offset", type=int, default=0)
    args = parser.parse_args()
    lines = [ln for ln in args.requests_file.read_text().splitlines() if ln]
    result = asyncio.run(run(args.url, lines, args.rate, args.seconds, args.offset))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
