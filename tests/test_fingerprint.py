"""Statement identity (fingerprint) and likeness (structural embedding)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pg_architect.auditor.fingerprint import DIM, EMBEDDING_MODEL, cosine, embed, fingerprint
from pg_architect.auditor.parsing import parse_query

BASE = "SELECT id, total FROM orders WHERE customer_id = $1 AND status = $2 ORDER BY created_at DESC LIMIT $3"


# -- fingerprint -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", [
    "select id, total from orders where customer_id = 42 and status = 'paid' order by created_at desc limit 20",
    "SELECT id, total\n  FROM orders\n WHERE customer_id = $7 -- the customer\n   AND status = $1\n"
    " ORDER BY created_at DESC LIMIT $2",
    "/* app:checkout */ SELECT id, total FROM orders WHERE customer_id = $1 AND status = $2 "
    "ORDER BY created_at DESC LIMIT 100",
])
def test_fingerprint_ignores_literals_formatting_comments_and_placeholder_numbers(variant: str) -> None:
    assert fingerprint(variant) == fingerprint(BASE), variant


def test_fingerprint_ignores_in_list_length_and_typed_literal_repair() -> None:
    assert fingerprint("SELECT * FROM t WHERE a IN ($1, $2, $3)") == fingerprint("SELECT * FROM t WHERE a IN ($1)")
    assert fingerprint("SELECT * FROM t WHERE a IN ($1 /*, ... */)") == fingerprint("SELECT * FROM t WHERE a IN (1, 2)")
    assert fingerprint("SELECT * FROM t WHERE ts > now() - interval $1") == \
        fingerprint("SELECT * FROM t WHERE ts > now() - interval '3 days'")


def test_fingerprint_differs_for_other_statements() -> None:
    others = {fingerprint(q) for q in (
        BASE,
        "SELECT id, total FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2",
        "SELECT id, total FROM orders WHERE region = $1 AND status = $2 ORDER BY created_at DESC LIMIT $3",
        "SELECT id, total FROM invoices WHERE customer_id = $1 AND status = $2 ORDER BY created_at DESC LIMIT $3",
    )}
    assert len(others) == 4, others


def test_fingerprint_of_text_the_parser_rejects_is_still_stable() -> None:
    first, second = fingerprint("SELEC broken $1 FROM"), fingerprint("selec   broken $2 from")
    assert first == second and len(first) == 16, (first, second)


# -- embedding -------------------------------------------------------------------------------------------


def test_embedding_has_256_dimensions_unit_length_and_names_its_model() -> None:
    vector = embed(BASE)
    assert len(vector) == DIM == 256
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)
    assert EMBEDDING_MODEL == "structure-v1"


def test_embedding_of_text_and_of_its_shape_are_equal() -> None:
    assert embed(BASE) == embed(parse_query(BASE))


def test_embedding_is_identical_across_processes_with_different_hash_seeds() -> None:
    # Python's hash() of str changes with PYTHONHASHSEED; the embedding must not.
    code = f"import json; from auditor.fingerprint import embed; print(json.dumps(embed({BASE!r})))"
    vectors = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                             cwd=os.path.dirname(os.path.dirname(__file__)), timeout=60)
        vectors.append(json.loads(out.stdout))
    assert vectors[0] == vectors[1] == embed(BASE)


@pytest.mark.parametrize("variant", [
    # other literals
    "SELECT id, total FROM orders WHERE customer_id = 42 AND status = 'paid' ORDER BY created_at DESC LIMIT 20",
    # aliases and qualification
    "SELECT o.id, o.total FROM orders AS o WHERE o.customer_id = $1 AND o.status = $2 "
    "ORDER BY o.created_at DESC LIMIT $3",
    # formatting, case, comments, numbering
    "select id,total\nfrom ORDERS\nwhere status=$5 /* x */ and customer_id=$4\norder by created_at desc\nlimit 50",
])
def test_same_query_with_other_literals_aliases_or_formatting_scores_at_least_085(variant: str) -> None:
    score = cosine(embed(BASE), embed(variant))
    assert score >= 0.85, f"cosine {score:.3f} for {variant!r}"


@pytest.mark.parametrize("other", [
    "SELECT id, total FROM orders WHERE region = $1 AND amount > $2 ORDER BY shipped_at LIMIT $3",
    "SELECT id, total FROM orders WHERE shipped_at > $1",
    "SELECT count(*) FROM orders WHERE lower(email) = $1",
])
def test_same_table_but_other_columns_scores_clearly_lower(other: str) -> None:
    score = cosine(embed(BASE), embed(other))
    assert score < 0.7, f"cosine {score:.3f} for {other!r}"


@pytest.mark.parametrize("other", [
    "SELECT id, name FROM products WHERE category_id = $1 AND active = $2 ORDER BY price DESC LIMIT $3",
    "SELECT * FROM users WHERE lower(email) = $1",
    "UPDATE sessions SET seen_at = now() WHERE token = $1",
])
def test_a_different_table_scores_low(other: str) -> None:
    score = cosine(embed(BASE), embed(other))
    assert score < 0.3, f"cosine {score:.3f} for {other!r}"


def test_cosine_of_equal_orthogonal_and_zero_vectors() -> None:
    assert cosine([1.0, 0.0], [2.0, 0.0]) == pytest.approx(1.0)
    assert cosine([1.0, 0.0], [0.0, 3.0]) == pytest.approx(0.0)
    assert cosine([0.0, 0.0], [1.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="length"):
        cosine([1.0], [1.0, 2.0])
