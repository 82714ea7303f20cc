"""PostgreSQL killed (SIGKILL to the postmaster) and restarted while the exporter is being scraped."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pg_architect.exporter.target import APPLICATION_NAME
from tests.reliability.conftest import Exporter, OwnPostgres, backends, config, wait_until

CYCLES = 3


def _after(results: list[tuple[float | None, float]], seen: int, up: float) -> Callable[[], bool]:
    """A check: a scrape after the first ``seen`` ones reported ``pg_up`` == ``up``."""
    return lambda: any(value == up for value, _ in results[seen:])


def test_scrapes_answer_through_kills_and_restarts_and_recover(own_pg: OwnPostgres) -> None:
    budget = 2.0
    cfg = config(exporter_scrape_budget_s=str(budget))
    results: list[tuple[float | None, float]] = []
    errors: list[str] = []
    stop = threading.Event()

    with Exporter(own_pg.dsn(), cfg) as exporter:
        assert exporter.up()

        def scraper() -> None:
            for _ in range(5000):  # bounded; the test stops it much earlier
                if stop.is_set():
                    return
                try:
                    samples, took = exporter.scrape(timeout=30)
                    results.append((samples.get("pg_up"), took))
                except Exception as exc:  # every scrape must be answered; record what was not
                    errors.append(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=scraper, daemon=True)
        thread.start()
        try:
            for cycle in range(CYCLES):
                wait_until(lambda: any(up == 1.0 for up, _ in results[-3:]), f"cycle {cycle}: pg_up 1 before the kill")
                own_pg.kill()
                wait_until(_after(results, len(results), 0.0), f"cycle {cycle}: pg_up 0 while down")
                own_pg.start()
                wait_until(_after(results, len(results), 1.0), f"cycle {cycle}: pg_up 1 again")
        finally:
            stop.set()
            thread.join(60)
        assert not errors, errors[:5]
        slowest = max(took for _, took in results)
        # Answered within the budget plus the HTTP round trip, however the server died.
        assert slowest < budget + 1.5, f"slowest scrape {slowest:.2f} s (budget {budget} s)"
        # After all that, the exporter holds one connection, not one per failure.
        assert exporter.up()
        assert backends(own_pg.dsn(), APPLICATION_NAME) <= 1
    print(f"{len(results)} scrapes over {CYCLES} kill/restart cycles, slowest {slowest:.2f} s")
