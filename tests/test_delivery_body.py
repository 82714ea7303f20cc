"""The pull request's body, without a server: what a reviewer reads, including a language model's view when one
took part (issue 19: explanations in PRs), clearly labelled and inert."""

from __future__ import annotations

from datetime import UTC, datetime

from pg_architect.auditor.delivery import migrations, pull_request
from pg_architect.auditor.kb import PrRecommendation
from pg_architect.auditor.report import llm_lines

REC = PrRecommendation(
    recommendation_id=7, run_id="00000000-0000-0000-0000-000000000007", target_id=1, fingerprint="fp",
    query="SELECT id FROM orders WHERE customer_id = $1", type="index",
    sql='CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_customer_id_idx" ON "public"."orders" ("customer_id");',
    rollback_sql='DROP INDEX CONCURRENTLY IF EXISTS "public"."orders_customer_id_idx";', reasoning="measured",
    confidence=0.93, action="pr_merge", gain_percent=97.0,
    measurement={"method": "rollback_build", "samples": 2, "before_ms": 40.0, "after_ms": 1.2, "before_cost": 900.0,
                 "after_cost": 8.0, "plan_before": "Seq Scan on orders", "plan_after": "Index Scan using x on orders"},
    calls=120, mean_ms=40.0, total_ms=4800.0,
)


def body(notes: list[str]) -> str:
    ddl = migrations.index_ddl(REC.sql, REC.rollback_sql)
    migration = migrations.build(REC, "prisma", "prisma/migrations", datetime(2026, 11, 30, tzinfo=UTC), 2000)
    return pull_request.body(REC, ddl, migration, "http://pg-architect/runs/7", notes)


def test_the_models_view_is_in_the_pull_request_labelled_and_without_mentions_or_links() -> None:
    notes = llm_lines(
        {
            "explanation": {
                "model": "fake-architect",
                "intent": "Lists a customer's orders for the account page @here see https://evil.example",
                "complexity": "low",
                "business_context": "<!channel> Checkout history.",
            }
        }
    )
    text = body(notes)
    assert "### The language model's view (model output, not evidence: the measurement decides)" in text
    assert "Lists a customer's orders for the account page" in text
    for forbidden in ("@here", "<!channel>", "https://evil.example"):
        assert forbidden not in text, forbidden


def test_without_a_model_the_pull_request_has_no_model_section() -> None:
    text = body([])
    assert "language model" not in text and "### Reasoning" in text and "Recommend merge" in text
