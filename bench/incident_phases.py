"""One incident revoke in process, its phases timed: run by bench/incident_scale.py in a
process of its own, with the code under test first on PYTHONPATH.

Prints one JSON line: how long the switches' lock was held (``wait_for_links_in_progress``
takes it exclusively and commits at once), how long the revoke's own transaction stayed
open (from the first write, the withdrawal, to its commit: the time its row locks, and on
SQLite the one writer's lock, are held), and the whole call.

    python bench/incident_phases.py URL SINCE UNTIL
"""

from __future__ import annotations

import json
import sys
import time


def main(url: str, since: str, until: str) -> None:
    from tsd_server import create_app, incident
    from tsd_server.discovery import kill_switch

    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "phases" * 8, "ENV": "production"})
    marks: dict[str, float] = {}
    real_wait = kill_switch.wait_for_links_in_progress

    def timed_wait() -> None:
        marks["lock_taken"] = time.perf_counter()
        real_wait()
        marks["lock_released"] = time.perf_counter()

    kill_switch.wait_for_links_in_progress = timed_wait
    with app.app_context():
        started = time.perf_counter()
        result = incident.revoke("ip_match", incident.parse_time(since),
                                 incident.parse_time(until), actor="cli")
        ended = time.perf_counter()
    print(json.dumps({
        "revoked": len(result.revoked), "withdrawn": result.withdrawn,
        "switch_lock_ms": (marks["lock_released"] - marks["lock_taken"]) * 1000,
        "transaction_s": ended - marks["lock_released"], "total_s": ended - started}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
