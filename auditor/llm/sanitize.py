"""What may leave the machine, and what model text may become.

Outbound: :func:`statement_for_model` re-prints a statement from its parse tree (pglast), so comments (where
prompt injections hide: pg_stat_statements keeps them verbatim) are gone, and every constant the tree still
holds becomes a ``$n`` placeholder, so no literal leaves either. Text that does not parse is never sent.

Inbound: :func:`model_text` turns anything the model wrote into plain, short, inert text before it reaches
the report, a pull request or Slack: no mentions (``@channel``, ``@here``, ``<@U123>``, ``@user``), no links,
no markup that could ping or lure a reader.
"""

from __future__ import annotations

import re
from typing import Any

from pglast import ast, parser
from pglast.parser import ParseError
from pglast.stream import RawStream

from pg_architect.auditor.parsing import repair_placeholders
from pg_architect.core.errors import PgArchitectError


class NotShareable(PgArchitectError):
    """The statement cannot be reduced to a form without comments and literals: it is not sent."""


class _Masker:
    """Replaces every constant outside type names with a new ``$n``, counting the type modifiers kept."""

    def __init__(self, next_number: int) -> None:
        self.next_number = next_number
        self.kept = 0

    def visit(self, node: Any, in_type: bool = False) -> Any:
        if isinstance(node, tuple | list):
            return type(node)(self.visit(child, in_type) for child in node)
        if not isinstance(node, ast.Node):
            return node
        if isinstance(node, ast.A_Const):
            if node.isnull:
                return node
            if in_type:  # varchar(20): the schema's, not data
                self.kept += 1
                return node
            replacement = ast.ParamRef(number=self.next_number)
            self.next_number += 1
            return replacement
        inside = in_type or isinstance(node, ast.TypeName)
        for name in node:
            child = getattr(node, name)
            if self._positional(node, name, child):
                continue
            if isinstance(child, tuple | list | ast.Node):
                setattr(node, name, self.visit(child, inside))
        return node

    def _positional(self, node: Any, name: str, child: Any) -> bool:
        """``ORDER BY 2`` and ``GROUP BY 1`` name output columns: structure, not data; kept as written."""
        if isinstance(node, ast.SortBy) and name == "node" and _is_integer(child):
            self.kept += 1
            return True
        if isinstance(node, ast.SelectStmt) and name == "groupClause" and child:
            positions = [item for item in child if _is_integer(item)]
            if positions:
                self.kept += len(positions)
                rest = [item if _is_integer(item) else self.visit(item) for item in child]
                setattr(node, name, type(child)(rest))
                return True
        return False


def _is_integer(node: Any) -> bool:
    return isinstance(node, ast.A_Const) and isinstance(node.val, ast.Integer)


def _param_numbers(node: Any) -> list[int]:
    found: list[int] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, tuple | list):
            stack.extend(current)
        elif isinstance(current, ast.Node):
            if isinstance(current, ast.ParamRef):
                found.append(int(current.number or 0))
            stack.extend(getattr(current, name) for name in current)
    return found


def statement_for_model(text: str) -> str:
    """``text`` re-printed from its parse tree, without comments, every constant a ``$n``; NotShareable if not."""
    try:
        statements = parser.parse_sql(repair_placeholders(text))
    except ParseError as exc:
        raise NotShareable(f"the statement does not parse, so it is not sent to the model: {exc}") from exc
    if len(statements) != 1:
        raise NotShareable("only single statements are sent to the model")
    masker = _Masker(max(_param_numbers(statements[0].stmt), default=0) + 1)
    root = masker.visit(statements[0].stmt)
    kept = masker.kept
    try:
        printed = str(RawStream()(root))
    except Exception as exc:  # pglast raises several kinds for trees it cannot print
        raise NotShareable(f"the statement cannot be re-printed without its constants: {exc}") from exc
    # The printed text must itself be free of constants and comments (the scanner has the last word).
    tokens = [t.name for t in parser.scan(printed)]
    if any(t in ("SCONST", "USCONST", "FCONST", "BCONST", "XCONST", "C_COMMENT", "SQL_COMMENT") for t in tokens) or (
        tokens.count("ICONST") > kept
    ):
        raise NotShareable("the statement still holds a constant after re-printing: not sent")
    return printed


_SLACK_SPECIAL = re.compile(r"<[!@#][^>]*>")  # <!channel>, <@U123>, <#C123>, <!subteam^...>
_SLACK_LINK = re.compile(r"<(?:https?|mailto|ftp)[^>|]*(?:\|([^>]*))?>", re.IGNORECASE)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_URL = re.compile(r"\b(?:https?|ftp|file|mailto|javascript|data):[^\s<>\"')\]]*", re.IGNORECASE)
_WWW = re.compile(r"\bwww\.[^\s<>\"')\]]+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w.])[@\uff20][\w.\-/]+")
_HTML = re.compile(r"<[^>]{0,200}>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def model_text(text: object, limit: int = 600) -> str:
    """Model output made inert for people: no mentions, links, markup or control characters; at most ``limit``."""
    value = str(text) if text is not None else ""
    value = _CONTROL.sub("", value)
    value = _SLACK_LINK.sub(lambda m: m.group(1) or "", value)
    value = _SLACK_SPECIAL.sub("", value)
    value = _MD_LINK.sub(lambda m: m.group(1), value)
    value = _URL.sub("[link removed]", value)
    value = _WWW.sub("[link removed]", value)
    value = _HTML.sub("", value)
    value = _MENTION.sub("", value)
    value = value.replace("`", "'").replace("|", "/")
    value = " ".join(value.split())
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def carries_mention_or_link(text: str) -> bool:
    """Whether ``text`` holds anything :func:`model_text` would remove as a mention or a link."""
    return bool(
        _SLACK_SPECIAL.search(text)
        or _SLACK_LINK.search(text)
        or _MD_LINK.search(text)
        or _URL.search(text)
        or _WWW.search(text)
        or _MENTION.search(text)
    )
