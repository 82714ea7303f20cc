"""The ``pg-architect`` command line: the only place errors become exit codes and one readable line.

Exit codes: 0 ok, 1 the work failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pg_architect import __version__
from pg_architect.core.config import Config, load_config, parse_listen
from pg_architect.core.errors import ConfigError, PgArchitectError, UsageError, redact

log = logging.getLogger("pg_architect")

# The report formats (auditor.report renders them). Modules are imported by the commands that use them, so
# the long-running exporter does not carry the auditor's or the embedded server's code in its memory.
FORMATS = ("text", "json", "markdown")

EMBEDDED = "embedded"
# The lifecycle statuses (pg_architect.auditor.lifecycle.STATUSES; repeated so parsing imports no auditor code).
STATUSES = ("pending", "pr_open", "merged", "applied", "rejected", "superseded", "obsolete")


def _recommendation_id(text: str) -> int:
    value = text.removeprefix("#")
    if not value.isdigit() or int(value) <= 0:
        raise argparse.ArgumentTypeError(f"expected a recommendation id (a positive integer), got {text!r}")
    return int(value)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage and exit 2 itself
        raise UsageError(message)


def _whole(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low`` (the same bounds as the configuration's keys)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text[:40]!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text[:40]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text[:40]!r}")
    return value


def _run_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a run id (a UUID), got {text[:40]!r}") from None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML configuration file (or PG_ARCHITECT_CONFIG)")
    parser.add_argument(
        "--dsn", help="the audited database (overrides database.dsn); 'embedded' for the embedded server"
    )
    parser.add_argument("--debug", action="store_true", help="verbose logs and tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pg-architect", description="Autonomous database architect for PostgreSQL.")
    parser.add_argument("--version", action="version", version=f"pg-architect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("exporter", help="serve /metrics and /healthz for Prometheus")
    _common(p)
    p.add_argument("--listen", metavar="HOST:PORT", help="listen address (default 0.0.0.0:9188)")
    p.set_defaults(func=cmd_exporter)

    p = sub.add_parser("check", help="preflight: version, extensions, privileges, settings")
    _common(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("audit", help="run the weekly audit now and print its report")
    _common(p)
    p.add_argument("--format", choices=FORMATS, default="text")
    p.add_argument("--min-calls", type=_whole(0), metavar="N")
    p.add_argument("--min-mean-ms", type=_milliseconds, metavar="MS")
    p.add_argument("--limit", type=_whole(1), metavar="N")
    p.add_argument("--dry-run", action="store_true", help="store to the knowledge base; open no PR, send nothing")
    p.add_argument("--target", metavar="NAME", help="only this database of targets (default: every target)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("snapshot", help="take the daily pg_stat_statements and health snapshot now")
    _common(p)
    p.add_argument("--target", metavar="NAME", help="only this database of targets (default: every target)")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("report", help="print the last audit's report from the knowledge base")
    _common(p)
    p.add_argument("--format", choices=(*FORMATS, "html"), default="text")
    p.add_argument("--run", type=_run_id, metavar="RUN_ID", help="a run id (default: the latest successful run)")
    p.add_argument("--send", action="store_true", help="send the weekly report to Slack (slack.webhook_url_file)")
    p.add_argument("--output", metavar="FILE", help="write the report to FILE instead of printing it")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("kb", help="the knowledge base")
    kb_sub = p.add_subparsers(dest="kb_command", metavar="KB_COMMAND", parser_class=_Parser, required=True)
    q = kb_sub.add_parser("search", help="nearest past optimisations of a statement, with similarity")
    _common(q)
    q.add_argument("sql", metavar="SQL")
    q.add_argument("--limit", type=_whole(1), default=5)
    q.set_defaults(func=cmd_kb_search)

    p = sub.add_parser("recommendations", help="the lifecycle of recommendations: list, show, accept, reject")
    _common(p)
    p.add_argument("action", choices=("list", "show", "accept", "reject"))
    p.add_argument("id", nargs="?", type=_recommendation_id, metavar="ID", help="a recommendation id (#N)")
    p.add_argument("--reason", metavar="TEXT", help="why (recorded with the decision)")
    p.add_argument("--by", metavar="WHO", help="who decides (default: the operating-system user)")
    p.add_argument("--status", choices=STATUSES, help="list only recommendations in this status")
    p.add_argument("--limit", type=int, default=50, metavar="N")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_recommendations)

    p = sub.add_parser("demo", help="embedded PostgreSQL + demo workload + exporter + one audit")
    _common(p)
    p.add_argument("--once", action="store_true", help="exit after the report instead of serving until Ctrl-C")
    p.add_argument("--listen", metavar="HOST:PORT", help="exporter listen address (default 127.0.0.1:9188)")
    p.add_argument("--scale", type=float, default=1.0, help="data size factor (1.0: 1M orders)")
    p.add_argument("--reset", action="store_true", help="start over: reload the data, forget the knowledge base")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("serve", help="the auditor daemon: schedules + admin API")
    _common(p)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        result: int = args.func(args)
        return result
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"pg-architect: config: {redact(problem)}", file=sys.stderr)
        return exc.exit_code
    except PgArchitectError as exc:
        if debug:
            log.exception("failed")
        print(f"pg-architect: {redact(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback only on request
        if debug:
            log.exception("internal error")
        print(
            f"pg-architect: internal error: {type(exc).__name__}: {redact(str(exc))} (--debug shows the traceback)",
            file=sys.stderr,
        )
        return 1


# -- helpers shared by the commands ------------------------------------------------------------------


def load(args: argparse.Namespace, **overrides: Any) -> Config:
    flags = {"database.dsn": getattr(args, "dsn", None), **overrides}
    return load_config(getattr(args, "config", None), overrides=flags)


@contextlib.contextmanager
def database(cfg: Config) -> Iterator[tuple[str, str]]:
    """The audited DSN and the knowledge base's DSN, starting the embedded server when asked to (with targets
    and an external knowledge base, the default ``database.dsn: embedded`` is not used, so not started)."""
    targets_only = bool(cfg.targets) and cfg.database.dsn == EMBEDDED and cfg.database.kb_dsn not in (None, EMBEDDED)
    if targets_only or (cfg.database.dsn != EMBEDDED and cfg.database.kb_dsn != EMBEDDED):
        yield cfg.database.dsn, cfg.kb_dsn
        return
    from pathlib import Path

    data_dir = Path(cfg.database.embedded_data_dir) if cfg.database.embedded_data_dir else None
    from pg_architect.core.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir)
    with server:
        log.info("embedded PostgreSQL at %s (data in %s)", server.dsn(), server.data_dir)
        dsn = server.dsn() if cfg.database.dsn == EMBEDDED else cfg.database.dsn
        kb = server.dsn() if cfg.kb_dsn == EMBEDDED else cfg.kb_dsn
        yield dsn, kb


def stop_event() -> threading.Event:
    """An event set by SIGINT/SIGTERM: handlers only set the flag, the main loop reads it."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


# -- commands ------------------------------------------------------------------------------------------


def cmd_exporter(args: argparse.Namespace) -> int:
    from pg_architect.exporter.fleet import Fleet
    from pg_architect.exporter.server import ExporterServer, serve
    from pg_architect.exporter.target import Target

    cfg = load(args, **{"exporter.listen": args.listen})
    host, port = parse_listen(cfg.exporter.listen)
    fleet = Fleet(cfg) if cfg.targets else None
    # With targets and no database.dsn of its own, /metrics serves the exporter's process_* series only
    # (and no embedded server is started).
    default_database = not cfg.targets or cfg.database.dsn != EMBEDDED
    with contextlib.ExitStack() as stack:
        target = None
        if default_database:
            dsn, kb_dsn = stack.enter_context(database(cfg))
            target = Target("default", dsn, cfg, kb_dsn=kb_dsn)
        try:
            server = ExporterServer((host, port), target, fleet=fleet, config=cfg)
        except OSError as exc:
            raise PgArchitectError(f"cannot listen on {cfg.exporter.listen}: {exc.strerror or exc}") from exc
        log.info(
            "exporter listening on http://%s:%d/metrics%s",
            host,
            server.server_port,
            f" and /probe?target=NAME ({len(cfg.targets)} targets)" if cfg.targets else "",
        )
        serve(server, stop_event())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from pg_architect.auditor import preflight as auditor_checks
    from pg_architect.core import db, preflight
    from pg_architect.exporter import preflight as exporter_checks

    cfg = load(args)
    timeouts = db.policy(cfg, db.Role.CHECK)
    with database(cfg) as (dsn, kb_dsn):
        findings = preflight.on_server(
            dsn,
            "audited database",
            [exporter_checks.check_server, auditor_checks.server_checks(cfg.measurement)],
            timeouts,
        )
        if kb_dsn != dsn or findings[0].ok:
            findings += preflight.on_server(kb_dsn, "knowledge base", [auditor_checks.check_knowledge_base], timeouts)
    return print_findings(findings, print)


def _progress(enabled: bool) -> Callable[[str], None]:
    def show(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)
        else:
            log.info("%s", message)

    return show


def _interrupt_on_sigterm() -> None:
    """For one-shot commands: SIGTERM interrupts like Ctrl-C, so the run is closed as failed, not lost."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def cmd_audit(args: argparse.Namespace) -> int:
    from pg_architect.auditor.audit import AuditOptions, run_audit
    from pg_architect.auditor.report import render
    from pg_architect.auditor.targets import DEFAULT as DEFAULT_TARGET

    _interrupt_on_sigterm()
    cfg = load(args)
    options = AuditOptions.from_config(
        cfg, min_calls=args.min_calls, min_mean_ms=args.min_mean_ms, limit=args.limit, dry_run=args.dry_run
    )
    failed = 0
    with database(cfg) as (dsn, kb_dsn):
        for target in _audited(cfg, args, dsn):
            progress = _progress(sys.stderr.isatty() or args.format == "text")
            if target.name != DEFAULT_TARGET:
                progress(f"target {target.name}")
            report = run_audit(cfg, target.dsn, kb_dsn, options, progress)
            print(render(report, args.format))
            if report.status != "ok":
                failed += 1
                error = redact(report.error or report.status)
                print(f"pg-architect: audit {report.run_id} of {target.name} failed: {error}", file=sys.stderr)
    return 1 if failed else 0


def _audited(cfg: Config, args: argparse.Namespace, dsn: str) -> list[Any]:
    """The databases a command works on: ``--dsn`` or ``database.dsn``, else the configured targets."""
    from pg_architect.auditor.targets import audit_targets

    only = getattr(args, "target", None)
    single = args.dsn is not None or cfg.database.dsn != EMBEDDED or not cfg.targets
    return audit_targets(cfg, dsn if single and only is None else None, only)


def cmd_snapshot(args: argparse.Namespace) -> int:
    from pg_architect.auditor.snapshot import take_snapshot

    cfg = load(args)
    with database(cfg) as (dsn, kb_dsn):
        for target in _audited(cfg, args, dsn):
            print(take_snapshot(cfg, target.dsn, kb_dsn))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pg_architect.auditor.delivery import html, slack, weekly
    from pg_architect.auditor.delivery.after_audit import api_base_url
    from pg_architect.auditor.delivery.pulls import refresh_pull_requests
    from pg_architect.auditor.kb import KnowledgeBase
    from pg_architect.auditor.report import render

    cfg = load(args)
    if args.send and not cfg.secret("slack_webhook_url"):
        raise UsageError(
            "--send: Slack is not configured (slack.webhook_url_file or SLACK_WEBHOOK_URL); nothing sent"
        )
    with database(cfg) as (_dsn, kb_dsn):
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            try:
                for change in refresh_pull_requests(cfg, kb):
                    print(change, file=sys.stderr)
            except PgArchitectError as exc:  # GitHub down: the report is still worth printing
                kb.record_failure("github", redact(str(exc)), target_id=None, run_id=None)
                print(f"github failed: {redact(str(exc))} (pull request states may be stale)", file=sys.stderr)
            run_id = args.run or kb.latest_run_id()
            doc = kb.run_report(run_id) if run_id else None
            week = weekly.build(kb, api_base_url(cfg) + "/admin/database/report")
            sent = None
            if args.send:
                sent = slack.send_weekly(
                    cfg.secret("slack_webhook_url"),
                    week,
                    lambda error: kb.record_failure("slack", error, target_id=None, run_id=None),
                )
        finally:
            kb.close()
    if args.run and doc is None:
        raise PgArchitectError(f"no audit run {args.run}")
    if args.format == "html":
        text = html.run_page(doc) if args.run and doc is not None else html.weekly_page(week)
    elif doc is None:
        raise PgArchitectError(
            f"no audit run {args.run}" if args.run else "no successful audit yet: run pg-architect audit"
        )
    else:
        text = render(doc, args.format)
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text, encoding="utf-8")
        print(f"report written to {Path(args.output).resolve()}", file=sys.stderr)
    else:
        print(text)
    if sent is not None:
        print(sent, file=sys.stderr)
        return 1 if sent.startswith("slack failed") else 0
    return 0


def cmd_kb_search(args: argparse.Namespace) -> int:
    from pg_architect.auditor.fingerprint import EMBEDDING_MODEL, embed
    from pg_architect.auditor.kb import KnowledgeBase
    from pg_architect.auditor.parsing import UnparseableQuery, parse_query

    cfg = load(args)
    try:
        shape = parse_query(args.sql)
    except UnparseableQuery as exc:
        raise UsageError(f"cannot parse the statement: {exc}") from exc
    with database(cfg) as (_dsn, kb_dsn):
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            found = kb.similar(embed(shape), EMBEDDING_MODEL, limit=args.limit)
        finally:
            kb.close()
    if not found:
        print("the knowledge base has no optimisations yet")
    for s in found:
        gain = f"{s.gain_percent:.0f} %" if s.gain_percent is not None else "-"
        print(f"{s.similarity:.3f}  #{s.recommendation_id} [{s.status}] {s.type} gain {gain}  {s.sql}")
        print(f"       for: {' '.join(s.query.split())[:150]}")
    return 0


def cmd_recommendations(args: argparse.Namespace) -> int:
    import getpass
    import json

    from pg_architect.auditor import lifecycle
    from pg_architect.auditor.kb import KnowledgeBase

    if args.action != "list" and args.id is None:
        raise UsageError(f"recommendations {args.action} needs an ID")
    if args.limit < 1:
        raise UsageError(f"--limit must be >= 1, got {args.limit}")
    cfg = load(args)
    with database(cfg) as (_dsn, kb_dsn):
        kb = KnowledgeBase.open(kb_dsn, cfg)
        try:
            if args.action == "list":
                rows = kb.optimizations(args.limit, 0, args.status)
                if args.format == "json":
                    print(json.dumps([r.as_json() for r in rows], indent=2, default=str))
                    return 0
                if not rows:
                    print("no recommendations" + (f" with status {args.status}" if args.status else ""))
                for r in rows:
                    gain = f"{r.gain_percent:.0f} %" if r.gain_percent is not None else "-"
                    outcome = f" outcome {r.outcome} ({r.measured_gain_percent:.0f} %)" if r.outcome else ""
                    decided = f" [{r.decision} by {r.decided_by}]" if r.decision else ""
                    print(
                        f"#{r.recommendation_id:<6} {r.status:<10} {r.created_at:%Y-%m-%d} {r.action:<9} "
                        f"gain {gain}{outcome}{decided}  {r.sql}"
                    )
                return 0
            if args.action == "show":
                found = kb.optimization(args.id)
                if found is None:
                    raise PgArchitectError(f"no recommendation #{args.id}")
                events = kb.events(args.id)
                if args.format == "json":
                    doc = {**found.as_json(), "events": [e.as_json() for e in events]}
                    print(json.dumps(doc, indent=2, default=str))
                    return 0
                _show(found, events)
                return 0
            decision = "accepted" if args.action == "accept" else "rejected"
            who = args.by or getpass.getuser()
            updated = lifecycle.decide(kb, args.id, decision, who, args.reason)
        finally:
            kb.close()
    print(f"#{updated.recommendation_id} {decision} by {who}: status {updated.status}")
    return 0


def _show(r: Any, events: Sequence[Any]) -> None:
    print(f"recommendation #{r.recommendation_id}  [{r.status}]  created {r.created_at:%Y-%m-%d %H:%M} UTC")
    print(f"  statement: {' '.join(r.query.split())[:300]}")
    print(f"  sql:       {r.sql}")
    print(f"  rollback:  {r.rollback_sql}")
    gain = f"{r.gain_percent:.0f} %" if r.gain_percent is not None else "-"
    print(f"  predicted gain {gain}, confidence {r.confidence:.2f} -> {r.action}")
    if r.pr_url:
        print(f"  pull request: {r.pr_url}")
    if r.applied_index:
        print(f"  applied as {r.applied_index} at {r.applied_at:%Y-%m-%d %H:%M} UTC")
    outcome = r.outcome_json()
    if outcome:
        print(
            f"  outcome: {outcome['result']}: {outcome['before_mean_ms']} ms -> {outcome['after_mean_ms']} ms, "
            f"measured gain {outcome['measured_gain_percent']:.0f} %, time saved {outcome['time_saved_seconds']} s"
            + (" (provisional)" if outcome["provisional"] else "")
        )
        if outcome["plan_note"]:
            print(f"  plan: {outcome['plan_note']}")
    for e in events:
        who = f" by {e.actor}" if e.actor else ""
        why = f": {e.reason}" if e.reason else ""
        print(f"  {e.at:%Y-%m-%d %H:%M} {e.from_status or '-'} -> {e.to_status} ({e.source}{who}){why}")


def cmd_demo(args: argparse.Namespace) -> int:
    from pg_architect.demo import run_demo

    cfg = load(args, **{"exporter.listen": args.listen or "127.0.0.1:9188"})
    return run_demo(cfg, once=args.once, scale=args.scale, stop=stop_event(), reset=args.reset)


def cmd_serve(args: argparse.Namespace) -> int:
    from pg_architect.auditor import daemon

    cfg = load(args)
    stop = stop_event()
    with database(cfg) as (dsn, kb_dsn):
        daemon.run(cfg, dsn, kb_dsn, stop, targets=_audited(cfg, args, dsn))
    return 0


def print_findings(findings: Sequence[Any], out: Callable[[str], None]) -> int:
    failed = 0
    for f in findings:
        mark = "ok  " if f.ok else ("FAIL" if f.required else "warn")
        out(f"[{mark}] {f.name}: {redact(f.detail)}")
        if not f.ok and f.fix:
            out(f"       fix: {f.fix}")
        failed += (not f.ok) and f.required
    out("ready" if not failed else f"{failed} problem(s) to fix")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
