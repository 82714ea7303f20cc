"""Query text without literals: what the auditor may store, log, print, send or serve.

pg_stat_statements replaces the constants of plannable statements (SELECT, INSERT, UPDATE, DELETE, MERGE)
with ``$n``, but not everywhere: comments stay, PostgreSQL 15 keeps utility statements verbatim
(``CREATE ROLE bob PASSWORD 'secret'``, ``COMMENT ON ... IS 'alice@example.com'``), and a statement the
auditor itself ran with a sampled value may have been recorded before the auditor could stop it. So no
text from pg_stat_statements is trusted: :func:`safe_text` re-parses it (pglast), replaces every constant
with a placeholder and deparses the tree (comments do not survive deparsing). A utility statement, or text
the parser cannot read, keeps only its command tag and fingerprint; its text is withheld.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from typing import Any

from pglast import ast, parser, visitors
from pglast.parser import ParseError

from pg_architect.auditor.parsing import deparse, repair_placeholders
from pg_architect.core.sqlfiles import MARKER, mark

__all__ = ["UTILITY", "SafeText", "safe_text", "withheld_text"]

UTILITY = "utility statement"

_PLANNABLE = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt, ast.MergeStmt)
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_KEYWORDS = frozenset({"RESERVED_KEYWORD", "UNRESERVED_KEYWORD", "COL_NAME_KEYWORD", "TYPE_FUNC_NAME_KEYWORD"})
_LITERAL_TOKENS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_CONSTANTS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST", "PARAM", "IDENT", "UIDENT"})
_TAG_WORDS = 3
_NODE_TAGS = {
    "VariableSetStmt": "SET",
    "VariableShowStmt": "SHOW",
    "TransactionStmt": "TRANSACTION",
    "VacuumStmt": "VACUUM",
    "ExplainStmt": "EXPLAIN",
    "IndexStmt": "CREATE INDEX",
    "CreateStmt": "CREATE TABLE",
    "CopyStmt": "COPY",
    "CreateTableAsStmt": "CREATE TABLE AS",
    "DropStmt": "DROP",
    "CommentStmt": "COMMENT",
    "DoStmt": "DO",
    "SelectStmt": "SELECT",
    "InsertStmt": "INSERT",
    "UpdateStmt": "UPDATE",
    "DeleteStmt": "DELETE",
    "MergeStmt": "MERGE",
}


@dataclasses.dataclass(frozen=True, slots=True)
class SafeText:
    """``text`` carries no literal of the original; ``withheld`` when only the command tag is left."""

    text: str
    fingerprint: str
    command: str
    withheld: bool
    why: str | None = None


def withheld_text(command: str, fingerprint_: str, why: str) -> str:
    """The stand-in shown for a statement whose text is withheld: its command tag and fingerprint only."""
    return f"{command} /* text withheld ({why}); fingerprint {fingerprint_} */"


def _masked_fingerprint(text: str) -> str:
    """A hash of the token stream with every constant masked.

    libpg_query's fingerprint ignores constants in plannable statements but hashes them in utility ones
    (``PASSWORD 'a'`` and ``PASSWORD 'b'`` differ), which would let anyone holding it test guesses.
    """
    try:
        words = [
            "?" if tok.name in _CONSTANTS else text[tok.start : tok.end + 1].lower()
            for tok in parser.scan(text)
            if tok.name not in _COMMENTS
        ]
    except ParseError:
        words = ["unscannable"]
    return "u" + hashlib.blake2b("\x1f".join(words).encode(), digest_size=8).hexdigest()[1:]


def _command_from_tokens(text: str) -> str:
    """The leading keywords of ``text`` (at most three), e.g. ``CREATE ROLE``: keywords are never literals."""
    words: list[str] = []
    try:
        tokens = [t for t in parser.scan(text) if t.name not in _COMMENTS]
    except ParseError:
        tokens = []
    for tok in tokens[:_TAG_WORDS]:
        if tok.kind not in _KEYWORDS:
            break
        words.append(text[tok.start : tok.end + 1].upper())
    return " ".join(words) or "UNKNOWN"


def _command_from_node(stmt: Any) -> str:
    """``CreateRoleStmt`` -> ``CREATE ROLE``: the node's name, never anything it holds."""
    name = type(stmt).__name__
    if name in _NODE_TAGS:
        return _NODE_TAGS[name]
    name = name.removesuffix("Stmt")
    return " ".join(re.findall(r"[A-Z][a-z]*|[a-z]+", name)).upper() or "UTILITY"


def _positional(ancestors: Any, node: ast.A_Const) -> bool:
    """``ORDER BY 1`` and ``GROUP BY 1`` name an output column: a placeholder there would change the
    statement (pg_stat_statements keeps them as written)."""
    if not isinstance(node.val, ast.Integer):
        return False
    parent = ancestors.node
    if isinstance(parent, ast.SortBy) and ancestors.member == "node":
        return True
    return any(getattr(a, "member", None) in ("groupClause", "distinctClause") for a in _chain(ancestors))


def _chain(ancestors: Any) -> list[Any]:
    found: list[Any] = []
    current = ancestors
    while current is not None and len(found) < 4:
        found.append(current)
        current = current.parent
    return found


class _Placeholders(visitors.Visitor):
    """Replace every constant with ``$n`` (numbered after the statement's own placeholders)."""

    def __init__(self, first: int) -> None:
        super().__init__()
        self.next = first

    def visit_TypeName(self, ancestors: Any, node: Any) -> Any:
        return visitors.Skip  # typmods (varchar(20)) are part of the type, not data

    def visit_A_Const(self, ancestors: Any, node: ast.A_Const) -> Any:
        if node.isnull or _positional(ancestors, node):
            return None
        self.next += 1
        return ast.ParamRef(number=self.next)


class _Params(visitors.Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.highest = 0

    def visit_ParamRef(self, ancestors: Any, node: ast.ParamRef) -> None:
        self.highest = max(self.highest, node.number or 0)


def _withheld(command: str, fp: str, why: str) -> SafeText:
    return SafeText(withheld_text(command, fp, why), fp, command, True, why)


@functools.lru_cache(maxsize=8192)
def safe_text(text: str) -> SafeText:
    """``text`` with every literal replaced, or withheld down to its command tag (see the module).

    Cached: a snapshot meets the same texts day after day.
    """
    repaired = repair_placeholders(text)
    try:
        statements = parser.parse_sql(repaired)
    except ParseError:
        return _withheld(_command_from_tokens(text), _masked_fingerprint(text), "not parseable")
    if len(statements) != 1:
        return _withheld(_command_from_tokens(text), _masked_fingerprint(text), f"{len(statements)} statements")
    stmt = statements[0].stmt
    command = _command_from_node(stmt)
    if not isinstance(stmt, _PLANNABLE):
        return _withheld(command, _masked_fingerprint(text), UTILITY)
    # libpg_query's fingerprint of a plannable statement ignores its constants (fingerprint.fingerprint).
    fp = str(parser.fingerprint(repaired))
    try:
        tokens = parser.scan(text)
    except ParseError:
        tokens = None
    if tokens is not None and not any(t.name in _LITERAL_TOKENS or t.name in _COMMENTS for t in tokens):
        return SafeText(text, fp, command, False)  # no constant, no comment: pg_stat_statements' text as is
    try:
        params = _Params()
        params(stmt)
        rewritten = _Placeholders(params.highest)(stmt)
        out = deparse(rewritten)
        parser.parse_sql(out)  # what we deparse must read back as one statement
    except Exception:  # any deparser failure withholds the text rather than risk a literal
        return _withheld(command, fp, "could not be normalised")
    return SafeText(mark(out) if MARKER in text else out, fp, command, False)
