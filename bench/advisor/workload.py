"""The advisor benchmark's workload: schema, data (about 2 GB), statements, parameters and the truth table.

Nine tables of a shop and its back office (one of them partitioned by month, one with an enum and a
char(12) column), a view and a materialized view, generated with ``generate_series`` from fixed seeds, so
every run holds the same rows. 34 statements: 26 that a missing index slows down, each with the index
known to serve it (``Shape.good``) and the weaker index that helps only partly (``Shape.partial``); three
already served by an index (one present from the start, one created after the workload ran, i.e. after
pg_stat_statements and pg_qualstats recorded it, and the primary-key UPDATEs that make ``sessions``
write-heavy); five decoys that no index helps.

Key spellings in the truth table are PostgreSQL's own (``pg_get_indexdef(index, column, true)`` and
``pg_get_expr(indpred, indrelid, true)``), so an index is matched after it has been created, never by
comparing DDL text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

#: psycopg placeholders; every statement is sent with bound parameters, like an application does.
Params = tuple[Any, ...]

# -- schema and data -------------------------------------------------------------------------------------

# Each table is created and filled in one transaction: with wal_level = minimal the rows skip the WAL. The
# statements run in order; the last one fills the table.
TABLES: dict[str, tuple[str, ...]] = {
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
               timestamptz '2022-01-01 00:00+00' + (g - 1) * interval '31.536 seconds',
               round((5 + random() * 495)::numeric, 2),
               'TRK' || lpad(((g * 2654435761) % 4294967296)::text, 10, '0'),
               (1 + floor(random() * 999)::int) || ' Le Loi, D' || (1 + floor(random() * 12)::int)
        FROM (SELECT g, random() AS r FROM generate_series(1::bigint, 3000000) g) s""",
    ),
    "events": (
        """CREATE TABLE events (
            id bigint NOT NULL, account_id integer NOT NULL, session_id bigint NOT NULL, kind smallint NOT NULL,
            occurred_at timestamp NOT NULL, amount numeric(10,2) NOT NULL, payload text NOT NULL)""",
        """INSERT INTO events
        SELECT g, 1 + floor(random() * 20000)::int, 1 + floor(random() * 500000)::bigint,
               1 + floor(power(random(), 2) * 20)::smallint,
               timestamp '2024-01-01 00:00' + (g - 1) * interval '15.768 seconds',
               round((random() * 100)::numeric, 2),
               '{"ua":"Mozilla/5.0","v":' || (g % 97) || '}'
        FROM generate_series(1::bigint, 2000000) g""",
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
    "tickets": (
        "CREATE TYPE ticket_status AS ENUM ('open', 'pending', 'solved', 'closed', 'escalated')",
        # ref_code is char(12) holding 11 characters: PostgreSQL pads it; a parameter bound as char(1) matches
        # nothing, and one bound as text compares ref_code::text, which no index on ref_code serves.
        """CREATE TABLE tickets (
            id bigint NOT NULL, customer_id integer NOT NULL, ref_code char(12) NOT NULL,
            status ticket_status NOT NULL, priority smallint NOT NULL, order_ref bigint NOT NULL,
            subject text NOT NULL, opened_at timestamptz NOT NULL)""",
        """INSERT INTO tickets
        SELECT g, 1 + floor(random() * 1000000)::int, 'T' || lpad(((g * 2654435761) % 4294967296)::text, 10, '0'),
               (CASE WHEN r < 0.0005 THEN 'escalated' WHEN r < 0.05 THEN 'open' WHEN r < 0.10 THEN 'pending'
                     WHEN r < 0.40 THEN 'solved' ELSE 'closed' END)::ticket_status,
               floor(random() * 4)::smallint, g * 3, 'Subject ' || g,
               timestamptz '2023-01-01 00:00+00' + (g - 1) * interval '30 seconds'
        FROM (SELECT g, random() AS r FROM generate_series(1::bigint, 1000000) g) s""",
    ),
    "invoices": (
        """CREATE TABLE invoices (
            id bigint NOT NULL, account_id integer NOT NULL, issued_at timestamptz NOT NULL,
            paid_at timestamptz, amount numeric(10,2) NOT NULL, currency text NOT NULL)""",
        """INSERT INTO invoices
        SELECT g, 1 + floor(random() * 100000)::int, t,
               CASE WHEN random() < 0.03 THEN NULL ELSE t + interval '9 days' END,
               round((10 + random() * 990)::numeric, 2), (ARRAY['VND', 'USD', 'EUR'])[1 + floor(random() * 3)::int]
        FROM (SELECT g, timestamptz '2023-01-01 00:00+00' + (g - 1) * interval '63 seconds' AS t
              FROM generate_series(1::bigint, 1000000) g) s""",
    ),
    "sessions": (
        """CREATE TABLE sessions (
            id bigint NOT NULL, token text NOT NULL, user_id integer NOT NULL, last_seen timestamptz NOT NULL,
            hits integer NOT NULL)""",
        """INSERT INTO sessions
        SELECT g, md5('s' || g), 1 + floor(random() * 1000000)::int,
               timestamptz '2026-01-01 00:00+00' + random() * interval '90 days', floor(random() * 100)::int
        FROM generate_series(1::bigint, 500000) g""",
    ),
    "readings": (
        """CREATE TABLE readings (
            id bigint NOT NULL, device_id integer NOT NULL, taken_at timestamp NOT NULL,
            value double precision NOT NULL)
        PARTITION BY RANGE (taken_at)""",
        *(
            f"CREATE TABLE readings_2025_{m:02d} PARTITION OF readings "
            f"FOR VALUES FROM ('2025-{m:02d}-01') TO ('{2025 + m // 12}-{m % 12 + 1:02d}-01')"
            for m in range(1, 13)
        ),
        """INSERT INTO readings
        SELECT g, 1 + (g * 7919) % 5000, timestamp '2025-01-01 00:00' + g * interval '21.024 seconds', random()
        FROM generate_series(0::bigint, 1499999) g""",
    ),
}
#: Loaded by two sessions at once (2 cores): the big table alone, the others one after another.
LOAD_GROUPS = (("orders", "invoices", "sessions"), ("events", "customers", "jobs", "products", "tickets", "readings"))
#: Tables without a primary key (a partitioned table's key would have to include its partition key).
NO_PRIMARY_KEY = frozenset({"readings"})
#: Created once every table is loaded: a view over customers and a materialized view over events.
DERIVED = (
    "CREATE VIEW customer_directory AS SELECT id, name, country, phone FROM customers WHERE status = 'active'",
    """CREATE MATERIALIZED VIEW account_weekly AS
    SELECT account_id, date_trunc('week', occurred_at) AS week, count(*) AS events, sum(amount) AS amount
    FROM events GROUP BY 1, 2""",
    "VACUUM (FREEZE, ANALYZE) account_weekly",
)

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
    "CREATE INDEX ON orders (shipping_address)",
    "CREATE INDEX ON customers (name)",
    "CREATE INDEX ON account_weekly (account_id)",
    "CREATE INDEX ON readings (device_id, taken_at)",
    "CREATE INDEX ON tickets (ref_code)",
    "CREATE INDEX ON tickets (status, opened_at)",
    "CREATE INDEX ON tickets (order_ref)",
    "CREATE INDEX ON sessions (token)",
    "CREATE INDEX ON invoices (account_id, issued_at)",
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
    calls: int = 10
    dml: bool = False
    why: str = ""


EPOCH = datetime(2022, 1, 1, tzinfo=UTC)
EVENTS_EPOCH = datetime(2024, 1, 1)  # events.occurred_at is timestamp without time zone
JOBS_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
N_CUSTOMERS, N_ORDERS, N_PRODUCTS, N_JOBS = 1_000_000, 3_000_000, 200_000, 1_000_000
N_TICKETS, N_ACCOUNTS, N_INVOICE_ACCOUNTS, N_SESSIONS = 1_000_000, 20_000, 100_000, 500_000
READINGS_EPOCH = datetime(2025, 1, 1)  # readings.taken_at is timestamp without time zone
INVOICES_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)


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


def _ticket_ref(r: random.Random) -> str:
    return f"T{_scramble(r.randint(1, N_TICKETS)):010d}"


def _token(r: random.Random) -> str:
    return hashlib.md5(f"s{r.randint(1, N_SESSIONS)}".encode()).hexdigest()


def _address(r: random.Random) -> str:
    return f"{r.randint(1, 999)} Le Loi, D{r.randint(1, 12)}"


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
        calls=20,
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
        calls=5,
    ),
    Shape(
        "orders_monthly_since",
        "decoy",
        "low selectivity: the filter keeps 94 % of the rows",
        "SELECT date_trunc('month', created_at) AS month, count(*), sum(total) FROM orders "
        "WHERE created_at >= %s GROUP BY 1",
        lambda r: (datetime(2022, 3, 1, tzinfo=UTC) + timedelta(days=r.randint(0, 5)),),
        calls=5,
    ),
    Shape(
        "orders_status_or_total",
        "decoy",
        "OR across columns, most rows match",
        "SELECT count(*) FROM orders WHERE status = %s OR total > %s",
        lambda r: ("delivered", r.randint(40, 60)),
        calls=5,
    ),
    # -- the shapes of issue 20: statements the advisor must see through, parameters it must bind faithfully,
    # DML on a write-heavy table, and three statements that one index serves.
    Shape(
        "orders_cte_address",
        "missing",
        "filter outside an inlinable CTE",
        "WITH o AS (SELECT id, store_id, status, total, shipping_address FROM orders) "
        "SELECT id, total FROM o WHERE shipping_address = %s",
        lambda r: (_address(r),),
        good=(P("orders", "shipping_address"),),
        why="PostgreSQL inlines a CTE used once: the filter is on orders.shipping_address",
    ),
    Shape(
        "customer_directory_by_name",
        "missing",
        "view: the index belongs on its base table",
        "SELECT id, country FROM customer_directory WHERE name = %s",
        lambda r: (f"Customer {r.randint(1, N_CUSTOMERS)}",),
        good=(P("customers", "name"),),
    ),
    Shape(
        "account_weekly_history",
        "missing",
        "materialized view: indexable itself",
        "SELECT week, events, amount FROM account_weekly WHERE account_id = %s ORDER BY week",
        lambda r: (r.randint(1, N_ACCOUNTS),),
        good=(P("account_weekly", "account_id"),),
    ),
    Shape(
        "readings_device_window",
        "missing",
        "partitioned table: index on the parent",
        "SELECT avg(value), max(value) FROM readings WHERE device_id = %s AND taken_at >= %s AND taken_at < %s",
        lambda r: (
            r.randint(1, 5000),
            t := READINGS_EPOCH + timedelta(days=r.randint(0, 300)),
            t + timedelta(days=60),
        ),
        good=(P("readings", "device_id"),),
        partial=(P("readings", "taken_at", "device_id"),),
        why="pruning leaves two or three partitions; within them device_id keeps 1 row in 5,000",
    ),
    Shape(
        "tickets_by_ref",
        "missing",
        "char(12) parameter",
        "SELECT id, status, subject FROM tickets WHERE ref_code = %s",
        lambda r: (_ticket_ref(r),),
        good=(P("tickets", "ref_code"),),
        why="an 11-character value in char(12); bound as char(1) it matches nothing",
    ),
    Shape(
        "tickets_escalated",
        "missing",
        "enum parameter: a rare value + ORDER BY ... LIMIT",
        "SELECT id, customer_id, opened_at FROM tickets WHERE status = %s ORDER BY opened_at DESC LIMIT 20",
        lambda r: ("escalated",),
        good=(
            P("tickets", "status", "opened_at"),
            P("tickets", "opened_at", where="status = 'escalated'::ticket_status"),
        ),
        partial=(P("tickets", "status"),),
    ),
    Shape(
        "tickets_for_orders",
        "missing",
        "array parameter: = ANY(bigint[])",
        "SELECT id, status FROM tickets WHERE order_ref = ANY(%s)",
        lambda r: ([3 * r.randint(1, N_TICKETS) for _ in range(10)],),
        good=(P("tickets", "order_ref"),),
    ),
    Shape(
        "sessions_touch",
        "missing",
        "DML on a write-heavy table: UPDATE by a unique token",
        "UPDATE sessions SET last_seen = %s, hits = hits + 1 WHERE token = %s",
        lambda r: (datetime(2026, 4, 1, tzinfo=UTC), _token(r)),
        good=(P("sessions", "token"),),
        calls=20,
        dml=True,
    ),
    Shape(
        "sessions_hit",
        "indexed",
        "the write traffic of the write-heavy table: UPDATE by primary key",
        "UPDATE sessions SET hits = hits + 1 WHERE id = %s",
        lambda r: (r.randint(1, N_SESSIONS),),
        calls=100,
        dml=True,
        why="fast already (the primary key); it makes sessions write-heavy",
    ),
    Shape(
        "invoices_account_recent",
        "missing",
        "one index for three statements (1/3): equality + ORDER BY ... LIMIT",
        "SELECT id, issued_at, amount FROM invoices WHERE account_id = %s ORDER BY issued_at DESC LIMIT 10",
        lambda r: (r.randint(1, N_INVOICE_ACCOUNTS),),
        good=(P("invoices", "account_id", "issued_at"),),
        partial=(P("invoices", "account_id"),),
    ),
    Shape(
        "invoices_account_unpaid",
        "missing",
        "one index for three statements (2/3): equality + IS NULL",
        "SELECT count(*), sum(amount) FROM invoices WHERE account_id = %s AND paid_at IS NULL",
        lambda r: (r.randint(1, N_INVOICE_ACCOUNTS),),
        good=(P("invoices", "account_id"), P("invoices", "account_id", where="paid_at IS NULL")),
        why="10 invoices per account: (account_id, issued_at) serves it as well as (account_id, paid_at); a "
        "partial index on the unpaid ones serves it alone, for one more index to maintain",
    ),
    Shape(
        "invoices_account_period",
        "missing",
        "one index for three statements (3/3): equality + range",
        "SELECT count(*), sum(amount) FROM invoices WHERE account_id = %s AND issued_at >= %s AND issued_at < %s",
        lambda r: (
            r.randint(1, N_INVOICE_ACCOUNTS),
            t := INVOICES_EPOCH + timedelta(days=r.randint(0, 600)),
            t + timedelta(days=90),
        ),
        good=(P("invoices", "account_id"),),
        partial=(P("invoices", "issued_at", "account_id"),),
    ),
    Shape(
        "tickets_closed_count",
        "decoy",
        "enum parameter, a common value: 60 % of the rows",
        "SELECT count(*) FROM tickets WHERE status = %s",
        lambda r: ("closed",),
        calls=5,
    ),
    Shape(
        "sessions_expire",
        "decoy",
        "DML: DELETE of a fifth of a write-heavy table, on a column the workload updates",
        "DELETE FROM sessions WHERE last_seen < %s",
        lambda r: (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=18, minutes=r.randint(0, 600)),),
        calls=5,
        dml=True,
        why="an index on last_seen loses sessions_touch its HOT updates and reads a fifth of the table anyway",
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
