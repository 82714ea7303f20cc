"""When the daemon's jobs are due: pure time arithmetic in the configured time zone, no threads, no I/O.

The ``schedule`` package counts in naive local time of the host, so a host in UTC with the auditor configured
for Asia/Ho_Chi_Minh would run at the wrong hour, and it has no answer for the hour that DST skips or repeats.
Here each slot is a wall-clock time in ``auditor.schedule.timezone`` turned into an absolute UTC instant with
zoneinfo: a time inside the spring-forward gap runs at the shifted instant (02:30 -> 03:30 summer time), a time
repeated in autumn runs once, at its first occurrence (``fold=0``). One slot per local day, so never twice.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pg_architect.core.config import ScheduleConfig, parse_weekly

WEEKLY_AUDIT = "weekly_audit"
DAILY_SNAPSHOT = "daily_snapshot"
WEEKLY_REPORT = "weekly_report"

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# Catch-up: a weekly audit missed while the daemon was down runs once on start when the last successful one is
# older than this.
CATCH_UP_AFTER = timedelta(days=7)


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """A job at ``at`` local time, every day (``weekday`` None) or on one weekday (0 = Monday)."""

    name: str
    at: time
    weekday: int | None = None

    def slot_on(self, day: date, tz: ZoneInfo) -> datetime | None:
        """This job's instant (UTC) on local date ``day``, or None when it does not run that day."""
        if self.weekday is not None and day.weekday() != self.weekday:
            return None
        # fold=0: an ambiguous (repeated) time is its first occurrence; a skipped one maps past the gap.
        return datetime.combine(day, self.at, tzinfo=tz).astimezone(UTC)


def _hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _weekly(name: str, value: str) -> Job:
    day, at = parse_weekly(value)
    return Job(name, _hhmm(at), _WEEKDAYS.index(day))


class Schedule:
    """The three jobs of ``auditor.schedule`` and which is due when."""

    def __init__(self, jobs: tuple[Job, ...], tz: ZoneInfo) -> None:
        self.jobs = jobs
        self.tz = tz

    @classmethod
    def from_config(cls, cfg: ScheduleConfig) -> Schedule:
        return cls(
            (
                _weekly(WEEKLY_AUDIT, cfg.weekly_audit),
                Job(DAILY_SNAPSHOT, _hhmm(cfg.daily_snapshot)),
                _weekly(WEEKLY_REPORT, cfg.weekly_report),
            ),
            ZoneInfo(cfg.timezone),
        )

    def next_slot(self, job: Job, after_utc: datetime) -> datetime:
        """The first slot of ``job`` strictly after ``after_utc``."""
        day = after_utc.astimezone(self.tz).date() - timedelta(days=1)  # a slot's local date can precede ours
        for offset in range(9):
            slot = job.slot_on(day + timedelta(days=offset), self.tz)
            if slot is not None and slot > after_utc:
                return slot
        raise AssertionError(f"no slot for {job} within 9 days of {after_utc}")  # unreachable: weekly at most

    def next_runs(self, now_utc: datetime) -> list[tuple[datetime, str]]:
        """Each job's next slot strictly after ``now_utc``, soonest first."""
        return sorted((self.next_slot(job, now_utc), job.name) for job in self.jobs)


class Tracker:
    """Which slots have been handed out: each slot once, and after a gap (downtime, a long job, a clock jump)
    the missed slots of a job collapse into one run, not one per slot."""

    def __init__(self, schedule: Schedule, started_utc: datetime) -> None:
        self.schedule = schedule
        self.pending = {job.name: schedule.next_slot(job, started_utc) for job in schedule.jobs}

    def due(self, now_utc: datetime) -> list[str]:
        """The jobs whose slot has come; each is then moved to its first slot after ``now_utc``."""
        ready = []
        for job in self.schedule.jobs:
            if self.pending[job.name] <= now_utc:
                ready.append(job.name)
                self.pending[job.name] = self.schedule.next_slot(job, now_utc)
        return ready

    def next_due(self) -> datetime:
        return min(self.pending.values())


def catch_up_audit(last_success_utc: datetime | None, now_utc: datetime) -> bool:
    """Whether to run the weekly audit once on start because the daemon missed it.

    Only when a successful audit exists and is older than 7 days: a fresh install waits for its first slot (or
    an API call) instead of auditing the moment it starts, and a daemon restarted mid-week does not re-audit.
    """
    return last_success_utc is not None and now_utc - last_success_utc > CATCH_UP_AFTER
