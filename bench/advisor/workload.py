"""The advisor benchmark's workload: schema, data (about 1.3 GB), statements, parameters and the truth table.

Five tables of a shop and its back office, generated with ``generate_series`` from fixed seeds, so every
run holds the same rows. Twenty statements: fifteen that a missing index slows down, each with the index
known to serve it (``Shape.good``) and the weaker index that helps only partly (``Shape.partial``); two
already served by an index (one present from the start, one created after the workload ran, i.e. after
pg_stat_statements and pg_qualstats recorded it); three decoys that no index helps.

Key spellings in the truth table are PostgreSQL's own (``pg_get_indexdef(index, column, true)`` and
``pg_get_expr(indpred, indrelid, true)``), so an index is matched after it has been created, never by
comparing DDL text.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

#: psycopg placeholders; every statement is sent with bound parameters, like an application does.
Params = tuple[Any, ...]

# -- schema and data -------------------------------------------------------------------------------------

# Each table is created and filled in one transaction: with wal_level = minimal the rows skip the WAL.
TABLES: dict[str, tuple[str, str]] = {
    "customers": (
        """CREATE TABLE customers (
            id integer NOT NULL, email text NOT NULL, name text NOT NULL, phone text NOT NULL,
            country text NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL)""",
        """INSERT INTO customers
        SELECT g, 'User' || g || '@Example.com', 'Customer ' || g,
               '+8490' || lpad(((g::bigint * 7919) % 10000000)::text, 7, '0'),
               chr(65 + k / 26) || chr(65 + k % 26),
               CASE WHEN random() < 0.97 THEN 'active' ELSE 'closed' END,
               timestamptz '2022-01-01 00:00+00' + (g - 1) * interval '94.608 seconds'
        FROM (SELECT g, floor(power(random(), 3) * 50)::int AS k FROM generate_series(1, 1000000) g) s""",
    ),
    "orders": (
        """CREATE TABLE orders (
            id bigint NOT NULL, customer_id integer NOT NULL, store_id integer NOT NULL, status text NOT NULL,
            created_at timestamptz NOT NULL, total numeric(10,2) NOT NULL, tracking_code text NOT NULL,
            shipping_address text NOT NULL)""",
        """INSERT INTO orders
        SELECT g, 1 + floor(random() * 1000000)::int, 1 + floor(random() * 1000)::int,
               CASE WHEN r < 0.90 THEN 'delivered' WHEN r < 0.95 THEN 'shipped' WHEN r < 0.98 THEN 'paid'
                    WHEN r < 0.995 THEN 'pending' ELSE 'cancelled' END,
               timestamptz '2022-01-01 00:00+00' + (g - 1) * interval '15.768 seconds',
               round((5 + random() * 495)::numeric, 2),
               'TRK' || lpad(((g * 2654435761) % 4294967296)::text, 10, '0'),
               (1 + floor(random() * 999)::int) || ' Le Loi, D' || (1 + floor(random() * 12)::int)
        FROM (SELECT g, random() AS r FROM generate_series(1::bigint, 6000000) g) s""",
    ),
    "events": (
        """CREATE TABLE events (
            id bigint NOT NULL, account_id integer NOT NULL, session_id bigint NOT NULL, kind smallint NOT NULL,
            occurred_at timestamp NOT NULL, amount numeric(10,2) NOT NULL, payload text NOT NULL)""",
        """INSERT INTO events
        SELECT g, 1 + floor(random() * 20000)::int, 1 + floor(random() * 500000)::bigint,
               1 + floor(power(random(), 2) * 20)::smallint,
               timestamp '2024-01-01 00:00' + (g - 1) * interval '7.884 seconds',
               round((random() * 100)::numeric, 2),
               '{"ua":"Mozilla/5.0","v":' || (g % 97) || '}'
        FROM generate_series(1::bigint, 4000000) g""",
    ),
    "jobs": (
        """CREATE TABLE jobs (
            id bigint NOT NULL, queue text NOT NULL, state text NOT NULL, priority integer NOT NULL,
            attempts integer NOT NULL, run_at timestamptz NOT NULL, processed_at timestamptz,
            external_ref text NOT NULL, payload text NOT NULL)""",
        # The newest 1,000 jobs are queued (processed_at IS NULL); 0.1 % of the rest failed.
        """INSERT INTO jobs
        SELECT g, (ARRAY['email','sms','push','billing','export','import','report','webhook','thumbnail',
                         'cleanup'])[1 + floor(random() * 10)::int],
               CASE WHEN g > 999000 THEN 'queued' WHEN random() < 0.001 THEN 'failed' ELSE 'done' END,
               floor(random() * 10)::int, floor(power(random(), 4) * 5)::int,
               timestamptz '2024-01-01 00:00+00' + (g - 1) * interval '31.5 seconds',
               CASE WHEN g > 999000 THEN NULL
                    ELSE timestamptz '2024-01-01 00:00+00' + (g - 1) * interval '31.5 seconds' + interval '5 seconds'
               END,
               'ext-' || lpad(((g * 2654435761) % 4294967296)::text, 10, '0'),
               '{"to":"user' || g || '@example.com","template":"welcome","locale":"vi"}'
        FROM generate_series(1::bigint, 1000000) g""",
    ),
    "products": (
        """CREATE TABLE products (
            id integer NOT NULL, sku text NOT NULL, category_id integer NOT NULL, name text NOT NULL,
            price numeric(10,2) NOT NULL, description text NOT NULL)""",
        """INSERT INTO products
        SELECT g, 'SKU-' || upper(to_hex(((g::bigint * 2654435761) % 4294967296)::bigint)),
               1 + floor(random() * 2000)::int, 'Product ' || g, round((1 + random() * 999)::numeric, 2),
               'A sturdy, well made product number ' || g || ' that customers in Saigon and Hanoi buy often.'
        FROM generate_series(1, 200000) g""",
    ),
}
#: Loaded by two sessions at once (2 cores): the big table alone, the others one after another.
LOAD_GROUPS = (("orders",), ("events", "customers", "jobs", "products"))

#: Indexes the schema has before any tool runs (beside the primary keys).
EXISTING_INDEXES = ("CREATE INDEX customers_created_at_idx ON customers (created_at)",)
PRIMARY_KEYS = tuple(f"ALTER TABLE {t} ADD PRIMARY KEY (id)" for t in TABLES)
#: Created after the workload ran: pg_stat_statements and pg_qualstats saw the statement without it.
LATE_INDEXES = ("CREATE INDEX customers_phone_idx ON customers (phone)",)

#: The truth table's own indexes, one per known-good pattern (orders(customer_id) serves two statements):
#: the "oracle" configuration, which shows what the workload gains when every good index exists.
ORACLE_INDEXES = (
    "CREATE INDEX ON events (account_id, occurred_at)",
    "CREATE INDEX ON orders (store_id, created_at)",
    "CREATE INDEX ON customers (lower(email))",
    "CREATE INDEX ON jobs (run_at) WHERE processed_at IS NULL",
    "CREATE INDEX ON orders (tracking_code)",
    "CREATE INDEX ON orders (customer_id)",
    "CREATE INDEX ON events (occurred_at)",
    "CREATE INDEX ON events (date_trunc('day', occurred_at))",
    "CREATE INDEX ON jobs (external_ref)",
    "CREATE INDEX ON events (session_id)",
    "CREATE INDEX ON orders (store_id, status, created_at)",
    "CREATE INDEX ON products (category_id, price)",
    "CREATE INDEX ON jobs (state, queue, run_at)",
    "CREATE INDEX ON products (sku)",
)

# -- the truth table -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Pattern:
    """An index shape that serves a statement.

    ``groups`` are consumed in order from the index's leading keys; the keys inside one group may come
    in any order (equality columns are interchangeable, a range or sort column must follow them). Extra
    trailing keys are allowed. ``where`` is the required partial-index predicate, ``None`` for a full
    index; ``any_where`` accepts both.
    """

    table: str
    groups: tuple[tuple[str, ...], ...]
    where: str | None = None
    any_where: bool = False

    def describe(self) -> str:
        keys = ", ".join("{" + "|".join(g) + "}" if len(g) > 1 else g[0] for g in self.groups)
        return f"{self.table}({keys})" + (f" WHERE {self.where}" if self.where else "")


def P(table: str, *groups: str | tuple[str, ...], where: str | None = None, any_where: bool = False) -> Pattern:
    return Pattern(table, tuple((g,) if isinstance(g, str) else g for g in groups), where, any_where)


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    name: str
    kind: str  # "missing" (an index helps) | "indexed" | "late-indexed" | "decoy"
    feature: str
    sql: str
    params: Callable[[random.Random], Params]
    good: tuple[Pattern, ...] = ()
    partial: tuple[Pattern, ...] = ()
    calls: int = 20
    dml: bool = False
    why: str = ""


EPOCH = datetime(2022, 1, 1, tzinfo=UTC)
EVENTS_EPOCH = datetime(2024, 1, 1)  # events.occurred_at is timestamp without time zone
JOBS_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
N_CUSTOMERS, N_ORDERS, N_PRODUCTS, N_JOBS = 1_000_000, 6_000_000, 200_000, 1_000_000


def _scramble(g: int) -> int:
    return (g * 2654435761) % 4294967296


def _email(r: random.Random) -> str:
    return f"user{r.randint(1, N_CUSTOMERS)}@example.com"


def _phone(r: random.Random) -> str:
    return f"+8490{(r.randint(1, N_CUSTOMERS) * 7919) % 10_000_000:07d}"


def _tracking(r: random.Random) -> str:
    return f"TRK{_scramble(r.randint(1, N_ORDERS)):010d}"


def _sku(r: random.Random) -> str:
    return f"SKU-{_scramble(r.randint(1, N_PRODUCTS)):X}"


def _external_ref(r: random.Random) -> str:
    return f"ext-{_scramble(r.randint(1, N_JOBS)):010d}"


def _ts(r: random.Random, epoch: datetime, days: int, margin_days: int = 0) -> datetime:
    return epoch + timedelta(seconds=r.randint(0, (days - margin_days) * 86400))


SHAPES: tuple[Shape, ...] = (
    Shape(
        "events_account_range",
        "missing",
        "composite: equality + range",
        "SELECT count(*), sum(amount) FROM events WHERE account_id = %s AND occurred_at >= %s AND occurred_at < %s",
        lambda r: (
            r.randint(1, 20000),
            t := _ts(r, EVENTS_EPOCH, 365, 60).replace(hour=0, minute=0, second=0),
            t + timedelta(days=60),
        ),
        good=(P("events", "account_id", "occurred_at"),),
        partial=(P("events", "account_id"), P("events", "occurred_at", "account_id")),
    ),
    Shape(
        "orders_store_page",
        "missing",
        "pagination: equality + ORDER BY ... LIMIT",
        "SELECT id, created_at, total FROM orders WHERE store_id = %s ORDER BY created_at DESC LIMIT 50",
        lambda r: (r.randint(1, 1000),),
        good=(P("orders", "store_id", "created_at"),),
        partial=(P("orders", "store_id"),),
    ),
    Shape(
        "customers_lower_email",
        "missing",
        "expression: lower(email)",
        "SELECT id, name FROM customers WHERE lower(email) = %s",
        lambda r: (_email(r),),
        good=(P("customers", "lower(email)"),),
    ),
    Shape(
        "jobs_work_queue",
        "missing",
        "work queue: IS NULL, partial index",
        "SELECT id, queue, payload FROM jobs WHERE processed_at IS NULL ORDER BY run_at LIMIT 100",
        lambda r: (),
        good=(P("jobs", "run_at", where="processed_at IS NULL"), P("jobs", "processed_at", "run_at")),
        partial=(P("jobs", "processed_at"), P("jobs", "id", where="processed_at IS NULL")),
        calls=40,
        why="(run_at) alone is a trap: the queued jobs are the newest, so a scan in run_at order reads "
        "999,000 processed rows first",
    ),
    Shape(
        "orders_tracking_in",
        "missing",
        "IN list",
        "SELECT id, status, total FROM orders WHERE tracking_code IN (%s, %s, %s, %s, %s, %s, %s, %s)",
        lambda r: tuple(_tracking(r) for _ in range(8)),
        good=(P("orders", "tracking_code"),),
    ),
    Shape(
        "customer_orders_join",
        "missing",
        "join: index on the inner side's foreign key",
        "SELECT c.id, c.email, o.id, o.total FROM customers c JOIN orders o ON o.customer_id = c.id "
        "WHERE c.created_at >= %s AND c.created_at < %s",
        lambda r: (t := _ts(r, EPOCH, 1095, 1), t + timedelta(hours=2)),
        good=(P("orders", "customer_id"),),
        why="customers(created_at) exists; the join needs orders(customer_id) for a nested loop",
    ),
    Shape(
        "events_interval_window",
        "missing",
        "range with an interval constant",
        "SELECT kind, count(*), sum(amount) FROM events WHERE occurred_at >= %s AND occurred_at < %s "
        "+ interval '2 hours' GROUP BY kind",
        lambda r: (t := _ts(r, EVENTS_EPOCH, 365, 1), t),
        good=(P("events", "occurred_at"),),
        why="pg_stat_statements turns interval '2 hours' into interval $3, which does not PREPARE",
    ),
    Shape(
        "events_day_trunc",
        "missing",
        "expression: date_trunc('day', ...)",
        "SELECT count(*), sum(amount) FROM events WHERE date_trunc('day', occurred_at) = %s",
        lambda r: (EVENTS_EPOCH + timedelta(days=r.randint(0, 364)),),
        good=(P("events", "date_trunc('day'::text, occurred_at)"),),
        why="an index on occurred_at does not serve date_trunc(...) = value; 'day' is normalised to $1",
    ),
    Shape(
        "jobs_update_by_ref",
        "missing",
        "DML: UPDATE with a selective WHERE",
        "UPDATE jobs SET attempts = attempts + 1 WHERE external_ref = %s",
        lambda r: (_external_ref(r),),
        good=(P("jobs", "external_ref"),),
        dml=True,
    ),
    Shape(
        "events_delete_session",
        "missing",
        "DML: DELETE with a selective WHERE",
        "DELETE FROM events WHERE session_id = %s",
        lambda r: (r.randint(1, 500000),),
        good=(P("events", "session_id"),),
        dml=True,
    ),
    Shape(
        "orders_store_status_since",
        "missing",
        "composite: two equalities (any order) + range",
        "SELECT id, customer_id, total FROM orders WHERE store_id = %s AND status = %s AND created_at >= %s",
        lambda r: (r.randint(1, 1000), r.choice(("pending", "cancelled")), datetime(2024, 7, 1, tzinfo=UTC)),
        good=(P("orders", ("store_id", "status"), "created_at"),),
        partial=(P("orders", "store_id"), P("orders", "status", "store_id")),
    ),
    Shape(
        "products_category_cheapest",
        "missing",
        "pagination on a small table: equality + ORDER BY ... LIMIT",
        "SELECT id, name, price FROM products WHERE category_id = %s ORDER BY price LIMIT 20",
        lambda r: (r.randint(1, 2000),),
        good=(P("products", "category_id", "price"),),
        partial=(P("products", "category_id"),),
    ),
    Shape(
        "jobs_failed_by_queue",
        "missing",
        "rare state: equality on a skewed column + ORDER BY ... LIMIT",
        "SELECT id, run_at, attempts FROM jobs WHERE state = %s AND queue = %s ORDER BY run_at LIMIT 50",
        lambda r: (
            "failed",
            r.choice(("email", "sms", "push", "billing", "export", "import", "report", "webhook", "thumbnail")),
        ),
        good=(
            P("jobs", ("state", "queue"), "run_at"),
            P("jobs", "queue", "run_at", where="state = 'failed'::text"),
        ),
        partial=(P("jobs", "state"), P("jobs", "queue", "state")),
        why="(queue, run_at) without state reads ~100,000 rows per queue to find 50 failed ones",
    ),
    Shape(
        "products_by_sku",
        "missing",
        "equality on a unique key of a small table",
        "SELECT id, name, price FROM products WHERE sku = %s",
        lambda r: (_sku(r),),
        good=(P("products", "sku"),),
    ),
    Shape(
        "orders_customers_any",
        "missing",
        "= ANY(array) (a driver's IN list)",
        "SELECT id, customer_id, total, status FROM orders WHERE customer_id = ANY(%s)",
        lambda r: ([r.randint(1, N_CUSTOMERS) for _ in range(20)],),
        good=(P("orders", "customer_id"),),
    ),
    Shape(
        "customers_signups_per_country",
        "indexed",
        "already served by customers_created_at_idx",
        "SELECT country, count(*) FROM customers WHERE created_at >= %s AND created_at < %s GROUP BY country",
        lambda r: (t := _ts(r, EPOCH, 1095, 14), t + timedelta(days=14)),
        why="must not be recommended again",
    ),
    Shape(
        "customers_by_phone",
        "late-indexed",
        "customers_phone_idx created after the statistics were collected",
        "SELECT id, name FROM customers WHERE phone = %s",
        lambda r: (_phone(r),),
        why="the catalog, not the statistics, says what exists",
    ),
    Shape(
        "orders_status_totals",
        "decoy",
        "whole-table aggregate",
        "SELECT status, count(*), sum(total) FROM orders GROUP BY status",
        lambda r: (),
        calls=10,
    ),
    Shape(
        "orders_monthly_since",
        "decoy",
        "low selectivity: the filter keeps 94 % of the rows",
        "SELECT date_trunc('month', created_at) AS month, count(*), sum(total) FROM orders "
        "WHERE created_at >= %s GROUP BY 1",
        lambda r: (datetime(2022, 3, 1, tzinfo=UTC) + timedelta(days=r.randint(0, 5)),),
        calls=10,
    ),
    Shape(
        "orders_status_or_total",
        "decoy",
        "OR across columns, most rows match",
        "SELECT count(*) FROM orders WHERE status = %s OR total > %s",
        lambda r: ("delivered", r.randint(40, 60)),
        calls=10,
    ),
)


def shapes_of(kind: str) -> list[Shape]:
    return [s for s in SHAPES if s.kind == kind]


def workload_calls(seed: int) -> list[tuple[Shape, Params]]:
    """Every call of the recorded workload, interleaved the way an application's traffic is."""
    r = random.Random(seed)
    calls = [(s, s.params(r)) for s in SHAPES for _ in range(s.calls)]
    r.shuffle(calls)
    return calls


def timing_sets(seed: int, per_shape: int) -> dict[str, list[Params]]:
    """Fixed parameter sets for the before/after timings (another seed than the recorded workload)."""
    r = random.Random(seed)
    return {s.name: [s.params(r) for _ in range(per_shape)] for s in SHAPES}


def truth_rows() -> Sequence[tuple[str, str, str, str, str]]:
    """(shape, kind, feature, good, partial) for the documentation."""
    return [
        (
            s.name,
            s.kind,
            s.feature,
            " or ".join(p.describe() for p in s.good) or "(none: must recommend nothing)",
            " or ".join(p.describe() for p in s.partial) or "-",
        )
        for s in SHAPES
    ]
