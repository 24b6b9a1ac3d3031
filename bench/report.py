"""The benchmark's report in Markdown (docs/performance.md quotes the recorded one)."""

from __future__ import annotations

from collections.abc import Iterable

from bench import scenarios
from bench.measure import GeneratorProof, MemoryPoint, Summary, at_or_after

GROWTH_TOLERANCE = 0.15
P99_LIMIT_MS = 25.0
RSS_TOLERANCE = 0.10


def _f(value: float | None, fmt: str = ".2f", missing: str = "–") -> str:
    return missing if value is None else format(value, fmt)


def results_table(summaries: list[Summary], backend: str) -> list[str]:
    """One row per path and world; targets checked on PostgreSQL."""
    lines = ["| path | world | req/s | share of ceiling | target | p50 / p99 at half load "
             "(ms) | WAL bytes/req | check |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for summary in summaries:
        path = scenarios.BY_NAME[summary.path]
        verdict = []
        if path.target is not None and summary.ratio is not None:
            if backend == "postgresql":
                verdict.append("ok" if summary.ratio >= path.target else "BELOW TARGET")
            elif summary.ratio < path.target:
                verdict.append("below the PostgreSQL target")
        if summary.p99_ms is not None and summary.p99_ms >= P99_LIMIT_MS:
            verdict.append("p99 ≥ 25 ms")
        if summary.unexpected:
            verdict.append(f"unexpected answers {summary.unexpected}")
        lines.append(
            f"| {path.title} | {summary.world} | {summary.rate:,.0f} | "
            f"{_f(summary.ratio)} | {_f(path.target, '.2f', '(ceiling)')} | "
            f"{_f(summary.p50_ms, '.1f')} / {_f(summary.p99_ms, '.1f')} | "
            f"{_f(summary.wal_bytes_per_request, ',.0f')} | {', '.join(verdict) or 'ok'} |")
    return lines


def growth_table(summaries: list[Summary], small: str, large: str) -> list[str]:
    """Each path's figures with the large tables over those with the small ones."""
    by_key = {(s.path, s.world): s for s in summaries}
    lines = [f"| path | share of ceiling ({small} → {large}) | req/s ratio | "
             "p99 at half load (ms) | within 15% |", "|---|---:|---:|---:|---|"]
    for path in scenarios.ALL_PATHS:
        a, b = by_key.get((path.name, small)), by_key.get((path.name, large))
        if a is None or b is None:
            continue
        rate_ratio = b.rate / a.rate if a.rate else None
        share = (f"{_f(a.ratio)} → {_f(b.ratio)}" if path.target is not None else "1 → 1")
        ok = rate_ratio is not None and abs(1 - rate_ratio) <= GROWTH_TOLERANCE
        if a.ratio and b.ratio:
            ok = ok and abs(1 - b.ratio / a.ratio) <= GROWTH_TOLERANCE
        lines.append(f"| {path.title} | {share} | {_f(rate_ratio)} | "
                     f"{_f(a.p99_ms, '.1f')} → {_f(b.p99_ms, '.1f')} | "
                     f"{'yes' if ok else 'NO'} |")
    return lines


def before_after_table(summaries: list[Summary], before: str, after: str) -> list[str]:
    by_key = {(s.path, s.world): s for s in summaries}
    lines = ["| path | share of ceiling before | after | target | p99 at half load before "
             "→ after (ms) |", "|---|---:|---:|---:|---:|"]
    for path in scenarios.HOT_PATHS:
        a, b = by_key.get((path.name, before)), by_key.get((path.name, after))
        if a is None or b is None:
            continue
        lines.append(f"| {path.title} | {_f(a.ratio)} | {_f(b.ratio)} | {_f(path.target)} | "
                     f"{_f(a.p99_ms, '.1f')} → {_f(b.p99_ms, '.1f')} |")
    return lines


def memory_lines(points: list[MemoryPoint], label: str) -> list[str]:
    middle, end = at_or_after(points, 50_000), points[-1]
    lines = [f"Worker RSS ({label}, mixed load of every path; KiB per worker):", "",
             "| requests | " + " | ".join(f"worker {pid}" for pid in points[0].rss_kib) + " |",
             "|---:|" + "---:|" * len(points[0].rss_kib)]
    for point in (points[0], middle, end):
        lines.append(f"| {point.requests:,} | " + " | ".join(
            f"{kib:,}" for kib in point.rss_kib.values()) + " |")
    growth = max(end.rss_kib[pid] / middle.rss_kib[pid] - 1 for pid in middle.rss_kib)
    verdict = "flat" if growth <= RSS_TOLERANCE else "GROWING"
    lines += ["", f"Largest growth from {middle.requests:,} to {end.requests:,} requests: "
              f"{growth:+.1%} ({verdict}; the limit is +10%)."]
    return lines


def proof_lines(proof: GeneratorProof, ceiling_rate: float) -> list[str]:
    ol = proof.open_loop
    return [
        "Load generators' own ceiling (against nginx answering the same JSON, a new "
        "connection per request):", "",
        f"- wrk: {proof.wrk.rate:,.0f} req/s, {proof.wrk.rate / ceiling_rate:.1f}× the app's "
        f"ceiling of {ceiling_rate:,.0f} req/s.",
        f"- open-loop generator asked for {ol.target_rate:,.0f} req/s (the app's ceiling, "
        f"twice the highest half load): sent {ol.sent_rate:,.0f} req/s, answered "
        f"{ol.rate:,.0f} req/s, at most {ol.max_send_lag_ms:.1f} ms behind schedule, "
        f"p50 {ol.p50_ms:.2f} ms, p99 {ol.p99_ms:.2f} ms, errors {ol.errors or 'none'}.",
    ]


def bullet_settings(settings: dict) -> Iterable[str]:
    for key, value in settings.items():
        yield f"- `TSD_{key}={value}`"
