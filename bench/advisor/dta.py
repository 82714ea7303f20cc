"""postgres-mcp's Database Tuning Advisor on one database, printed as JSON: run by bench.advisor.run.

postgres-mcp needs Python >= 3.12 and lives in its own virtual environment (see bench/advisor/README.md), so
this file is run with that interpreter, in a subprocess, and imports nothing of pg-architect:

    <venv>/bin/python bench/advisor/dta.py DSN --min-calls N --min-mean-ms MS --limit N

It calls what postgres-mcp's ``analyze_workload_indexes`` MCP tool calls (``DatabaseTuningAdvisor`` with its
defaults, a 10,000 MB budget), except the workload thresholds: the tool hard-codes 50 calls and 5 ms, and the
benchmark gives every tool the same thresholds instead. When one statement makes its whole analysis fail (it
reads a CTE's name as a table, for one), the statements it fails on alone are left out and the rest analysed
together; the output says which and why.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any


async def advise(dsn: str, min_calls: int, min_mean_ms: float, limit: int) -> dict[str, Any]:
    from postgres_mcp.index.dta_calc import DatabaseTuningAdvisor  # type: ignore[import-not-found]
    from postgres_mcp.sql import DbConnPool, SqlDriver  # type: ignore[import-not-found]

    pool = DbConnPool(dsn)
    await pool.pool_connect()
    excluded: list[dict[str, str]] = []
    try:
        driver = SqlDriver(conn=pool)
        started = time.monotonic()
        result = await DatabaseTuningAdvisor(driver).analyze_workload(
            min_calls=min_calls, min_avg_time_ms=min_mean_ms, limit=limit, max_index_size_mb=10000
        )
        whole_error = result.error
        if whole_error:
            # One statement it cannot handle fails its whole analysis. Find those statements (each analysed
            # alone), then analyse the others together, as a user would after reading the error.
            stats = await DatabaseTuningAdvisor(driver)._get_query_stats(min_calls, min_mean_ms, limit)
            kept = []
            for q in stats:
                alone = await DatabaseTuningAdvisor(driver, max_runtime_seconds=10).analyze_workload(
                    workload=[q], max_index_size_mb=10000
                )
                if alone.error:
                    excluded.append({"query": " ".join(str(q["query"]).split()), "error": alone.error})
                else:
                    kept.append(q)
            result = await DatabaseTuningAdvisor(driver).analyze_workload(workload=kept, max_index_size_mb=10000)
        seconds = time.monotonic() - started
    finally:
        await pool.close()
    return {
        "seconds": seconds,
        "error": result.error,
        "whole_workload_error": whole_error,
        "excluded": excluded,
        "statements": len(result.workload or []),
        "indexes": [r.index_recommendation.definition for r in result.recommendations],
        "details": [
            {
                "definition": r.index_recommendation.definition,
                "individual_improvement_multiple": r.individual_improvement_multiple,
                "progressive_improvement_multiple": r.progressive_improvement_multiple,
                "queries": len(r.queries),
            }
            for r in result.recommendations
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dsn")
    parser.add_argument("--min-calls", type=int, required=True)
    parser.add_argument("--min-mean-ms", type=float, required=True)
    parser.add_argument("--limit", type=int, required=True)
    args = parser.parse_args(argv)
    doc = asyncio.run(advise(args.dsn, args.min_calls, args.min_mean_ms, args.limit))
    json.dump(doc, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
