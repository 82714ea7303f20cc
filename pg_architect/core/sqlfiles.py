"""SQL kept in ``.sql`` files, named by the lowest version they need, picked by one selector.

A package's ``queries/`` folder holds ``<name>.sql`` (any version) and ``<name>_post_<NNNNNN>.sql``
(needs version >= NNNNNN). ``get(name, version)`` returns the file with the highest version at or below
``version``. Catalog queries are keyed by ``server_version_num``; files whose name starts with ``pgss_``
are keyed by the pg_stat_statements extension version, encoded the same way (1.11 -> 11100).
"""

from __future__ import annotations

import functools
import re
from importlib import resources

#: Every statement of ours ends with this comment, so the auditor can recognise and skip its own
#: statements. It goes last: pg_stat_statements keeps inner and trailing comments but drops leading ones.
MARKER = "/* pg-architect */"


def mark(sql: str) -> str:
    """``sql`` with the marker appended (on its own line, so a trailing ``--`` comment cannot swallow it)."""
    return f"{sql.rstrip().rstrip(';').rstrip()}\n{MARKER}"


_NAME = re.compile(r"^(?P<name>[a-z0-9_]+?)(?:_post_(?P<version>\d{5,6}))?\.sql$")


def extension_version_num(version: str) -> int:
    """Encode an extension version like ``1.11`` as ``11100`` (major * 10000 + minor * 100)."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0, 0]
    return parts[0] * 10000 + parts[1] * 100 + parts[2]


class SqlLibrary:
    """The ``.sql`` files of one package's ``queries`` folder."""

    def __init__(self, package: str) -> None:
        self._package = package

    @functools.cached_property
    def _index(self) -> dict[str, list[tuple[int, str]]]:
        index: dict[str, list[tuple[int, str]]] = {}
        for entry in resources.files(self._package).iterdir():
            match = _NAME.match(entry.name)
            if match:
                version = int(match.group("version") or 0)
                text = mark(entry.read_text(encoding="utf-8"))
                index.setdefault(match.group("name"), []).append((version, text))
        for variants in index.values():
            variants.sort()
        return index

    def names(self) -> list[str]:
        return sorted(self._index)

    def get(self, name: str, version: int) -> str:
        """The text of ``name`` for the highest variant at or below ``version``."""
        variants = self._index.get(name)
        if not variants:
            raise KeyError(f"no SQL file named {name!r} in {self._package}")
        chosen = [text for v, text in variants if v <= version]
        if not chosen:
            lowest = variants[0][0]
            raise LookupError(f"{name} needs version {lowest} or later, the server has {version}")
        return chosen[-1]
