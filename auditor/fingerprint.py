"""Identity and likeness of statements: a parser fingerprint for grouping, a structural embedding for search.

``fingerprint`` merges the pg_stat_statements entries of one statement (per user, database, nesting level
and driver parameter types) before thresholds apply. ``embed`` places a statement in a 256-dimension space
by hashing its structural features (tables, columns and their roles, operators, sort keys ...), so the
knowledge base can find past optimisations of "the same query" without any model download: literal
values, aliases and formatting leave the vector unchanged; other columns or tables move it away.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from pglast import ast, parser
from pglast.parser import ParseError

from pg_architect.auditor.parsing import ColumnUse, QueryShape, UnparseableQuery, parse_query, repair_placeholders

__all__ = ["DIM", "EMBEDDING_MODEL", "cosine", "embed", "features", "fingerprint"]

#: Name stored next to each embedding, so vectors from another model are never compared with these.
EMBEDDING_MODEL = "structure-v1"
DIM = 256

_CONSTANT_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST", "PARAM"})
_COMMENT_TOKENS = frozenset({"C_COMMENT", "SQL_COMMENT"})


def fingerprint(text: str) -> str:
    """A stable 16-hex-digit identity of the normalised statement.

    Equal for the same statement with other literals, formatting, comments, ``$n`` numbering or IN-list
    lengths (libpg_query's fingerprint, after placeholder repair). Text the parser rejects (some
    normalised utility statements) falls back to a hash of its token stream with constants masked.
    """
    repaired = repair_placeholders(text)
    try:
        return str(parser.fingerprint(repaired))
    except ParseError:
        pass
    try:
        words = [
            "?" if tok.name in _CONSTANT_TOKENS else text[tok.start : tok.end + 1].lower()
            for tok in parser.scan(text)
            if tok.name not in _COMMENT_TOKENS
        ]
    except ParseError:
        words = text.lower().split()
    return hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).hexdigest()


# -- structural embedding ------------------------------------------------------------------------------


def _target(use: ColumnUse) -> str:
    table = use.table.name if use.table is not None else "?"
    return f"{table}.{use.column or _expression_shape(use.expression)}"


def _expression_shape(expression: str | None) -> str:
    """The expression without its placeholder numbers (``date_trunc($1, x)`` and ``date_trunc($3, x)`` match)."""
    if not expression:
        return "?"
    try:
        tokens = parser.scan(expression)
    except ParseError:
        return expression
    return "".join("$" if tok.name == "PARAM" else expression[tok.start : tok.end + 1] for tok in tokens)


def _functions(expression: str | None) -> list[str]:
    if not expression:
        return []
    try:
        statements = parser.parse_sql(f"SELECT {expression}")
    except ParseError:
        return []
    names: list[str] = []
    stack: list[object] = list(statements)
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(node)
        elif isinstance(node, ast.Node):
            if isinstance(node, ast.FuncCall):
                names.append(".".join(str(n.sval) for n in node.funcname or () if isinstance(n, ast.String)))
            stack.extend(getattr(node, name) for name in node)
    return sorted(names)


def features(shape: QueryShape) -> dict[str, float]:
    """The weighted structural features of a statement (what :func:`embed` hashes).

    Weights put most of the mass on what an index depends on: tables (2), each (table, column, role)
    triple (2) and column (1), sort keys with direction (1.5), join edges (1.5); the statement kind,
    operators, LIMIT/OFFSET, aggregates and nesting add little, so they never make unrelated
    statements look alike. Literal values, aliases, ``$n`` numbers and formatting are not features.
    """
    found: dict[str, float] = {}

    def add(name: str, weight: float) -> None:
        found[name] = found.get(name, 0.0) + weight

    add(f"kind:{shape.kind}", 1.0)
    if shape.is_utility:
        add(f"utility:{shape.utility_command}", 2.0)
    for table in dict.fromkeys(t.name for t in shape.tables):
        add(f"table:{table}", 2.0)
    joins: list[str] = []
    for use in shape.columns:
        target = _target(use)
        add(f"use:{target}:{use.role}", 2.0)
        add(f"col:{target}", 1.0)
        if use.operator:
            add(f"op:{use.role}:{use.operator}", 0.5)
        if use.expression:
            for function in _functions(use.expression):
                add(f"fn:{function}", 0.5)
        if use.constant is not None and use.param is None:
            # A constant (not its value) marks a partial-index opportunity.
            add(f"const:{target}", 0.5)
        if use.role == "order_by":
            add(f"order:{target}:{'desc' if use.descending else 'asc'}", 1.5)
        if use.role == "join":
            joins.append(target)
    # Join uses come in pairs (both sides of one condition), in statement order.
    for left, right in zip(joins[::2], joins[1::2], strict=False):
        add("join:" + "=".join(sorted((left, right))), 1.5)
    if shape.has_limit:
        add("limit", 0.5)
    if shape.offset is not None or shape.offset_param is not None:
        add("offset", 0.5)
    for name in shape.aggregates:
        add(f"agg:{name}", 0.5)
    for name in shape.window_functions:
        add(f"window:{name}", 0.5)
    if shape.distinct:
        add("distinct", 0.5)
    if shape.or_predicates:
        add("or", 0.5)
    if shape.subqueries:
        add(f"subqueries:{min(shape.subqueries, 3)}", 0.5)
    if shape.ctes:
        add(f"ctes:{min(shape.ctes, 3)}", 0.5)
    return found


def _slot(feature: str) -> tuple[int, float]:
    """Bucket and sign of a feature: hashlib, because Python's hash() is randomised per process."""
    digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "big") % DIM, 1.0 if digest[4] & 1 else -1.0


def embed(text_or_shape: str | QueryShape) -> list[float]:
    """Deterministic, L2-normalised structural embedding (:data:`DIM` floats) of a statement.

    Raises UnparseableQuery for text that cannot be parsed.
    """
    shape = parse_query(text_or_shape) if isinstance(text_or_shape, str) else text_or_shape
    vector = [0.0] * DIM
    for feature, weight in features(shape).items():
        index, sign = _slot(feature)
        vector[index] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        raise UnparseableQuery("the statement has no structural features to embed")
    return [v / norm for v in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in length: {len(a)} != {len(b)}")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
