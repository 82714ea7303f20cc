"""``python -m pg_architect``: the command line."""

from __future__ import annotations

from pg_architect.cli import main

raise SystemExit(main())
