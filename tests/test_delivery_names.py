"""Index names: deterministic, valid, at most 63 bytes, never an existing relation's name; a build whose name
met another definition is never measured as if it were the candidate."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from pg_architect.auditor import advisor, analysis
from pg_architect.auditor.catalog import Snapshot
from pg_architect.auditor.measure import Measurer
from pg_architect.auditor.parsing import parse_query
from pg_architect.core import db
from pg_architect.core.config import MeasurementConfig

QUERY = "SELECT id FROM orders WHERE customer_id = $1"


@pytest.fixture
def orders(pg_dsn: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL);"
            "INSERT INTO orders SELECT g, g % 5000, 'x' || g % 7 FROM generate_series(1, 50000) g;"
            # Someone's index, named as the advisor would name its candidate, with another definition.
            "CREATE INDEX orders_customer_id_idx ON orders (status);"
            "ANALYZE orders;"
        )
    return pg_dsn


def candidates(conn: db.Connection) -> list[advisor.Candidate]:
    snapshot = Snapshot(conn)
    shape, tables = analysis.resolve(snapshot, parse_query(QUERY))
    found = advisor.generate(snapshot, shape, tables)
    return list(found.candidates)


def test_candidate_never_takes_the_name_of_an_existing_relation(orders: str) -> None:
    conn = db.connect(orders, db.Role.AUDITOR, db.Timeouts())
    try:
        (cand,) = [c for c in candidates(conn) if [k.column for k in c.keys] == ["customer_id"]]
        assert cand.natural_name() == "orders_customer_id_idx"
        assert cand.name() != "orders_customer_id_idx" and cand.name().startswith("orders_customer_id_")
        assert cand.name() == candidates(conn)[0].name(), "names must be deterministic"
        assert "orders_customer_id_idx" not in cand.ddl(conn)
        # A sequence, a view, a table: any relation's name is taken.
        conn.execute(f'CREATE SEQUENCE "{cand.name()}"')
        (again,) = [c for c in candidates(conn) if [k.column for k in c.keys] == ["customer_id"]]
        assert again.name() not in (cand.name(), "orders_customer_id_idx")
    finally:
        conn.close()


def test_long_and_multibyte_names_fit_63_bytes_and_differ(pg_dsn: str) -> None:
    table = "bảng_đơn_hàng_" + "x" * 40
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f'CREATE TABLE "{table}" (id bigint PRIMARY KEY, "khách_hàng_id_rất_dài_{"y" * 20}" bigint, '
            f'"khách_hàng_id_rất_dài_{"z" * 20}" bigint)'
        )
    conn = db.connect(pg_dsn, db.Role.AUDITOR, db.Timeouts())
    try:
        a, b = (f'"khách_hàng_id_rất_dài_{c * 20}"' for c in "yz")
        snapshot = Snapshot(conn)
        shape, tables = analysis.resolve(snapshot, parse_query(f'SELECT id FROM "{table}" WHERE {a} = $1 AND {b} = $2'))
        found = advisor.generate(snapshot, shape, tables)
        names = [c.name() for c in found.candidates]
        assert len(names) >= 2 and len(set(names)) == len(names), names
        for name in names:
            assert len(name.encode()) <= 63, name
            name.encode().decode()  # cut on a character boundary
        # PostgreSQL keeps the name as written (no truncation notice) and the index gets built under it.
        for cand in found.candidates:
            conn.execute(cand.ddl(conn, concurrently=False))
            assert conn.execute("SELECT to_regclass(%s)", (db.Identifier(cand.name()).as_string(conn),)).fetchone()
    finally:
        conn.close()


def test_a_build_that_met_another_definition_is_not_measured(orders: str) -> None:
    conn = db.connect(orders, db.Role.AUDITOR, db.Timeouts())
    try:
        (cand,) = [c for c in candidates(conn) if [k.column for k in c.keys] == ["customer_id"]]
        _, tables = analysis.resolve(Snapshot(conn), parse_query(QUERY))
        measurer = Measurer(
            conn, MeasurementConfig(mode="rollback_build"), hypopg_installed=False, hypopg_available=False
        )
        sample = "SELECT id FROM orders WHERE customer_id = 42"
        # Forced onto the taken name, as before the fix: IF NOT EXISTS builds nothing.
        forced = dataclasses.replace(cand, chosen_name="orders_customer_id_idx")
        _, outcomes = measurer.measure("select", [sample], [forced, cand], list(tables.values()))
        by_name = {o.candidate.name(): o for o in outcomes}
        bad = by_name["orders_customer_id_idx"]
        assert bad.measurement is None and bad.error and ("is taken" in bad.error or "already exists" in bad.error), bad
        good = by_name[cand.name()]
        assert good.measurement is not None and good.measurement.gain_percent > 50, good
    finally:
        conn.close()
