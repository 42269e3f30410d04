"""A five-field cron schedule (minute hour day-of-month month day-of-week, UTC): ``*``, lists, ranges
and steps, with Vixie cron's rule that a restricted day-of-month and day-of-week match either."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trainer.exceptions import TrainerError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))


class Cron:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        parts = expression.split()
        if len(parts) != 5:
            raise TrainerError(f"cron {expression!r}: needs 5 fields (minute hour dom month dow), got {len(parts)}")
        sets = [_parse(part, name, lo, hi, expression) for part, (name, lo, hi) in zip(parts, _FIELDS, strict=True)]
        self.minutes, self.hours, self.days, self.months, dows = sets
        self.weekdays = {d % 7 for d in dows}  # 0 and 7 are both Sunday
        self._dom_any = parts[2] == "*"
        self._dow_any = parts[4] == "*"

    def __repr__(self) -> str:
        return f"Cron({self.expression!r})"

    def matches(self, at: datetime) -> bool:
        at = at.astimezone(UTC)
        return (at.minute in self.minutes and at.hour in self.hours and at.month in self.months
                and self._day_matches(at))

    def next_after(self, at: datetime) -> datetime:
        """The first matching minute strictly after ``at`` (searches up to ~4 years)."""
        t = at.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        end = t + timedelta(days=366 * 4 + 1)
        while t < end:
            if t.month not in self.months or not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += timedelta(minutes=1)
            else:
                return t
        raise TrainerError(f"cron {self.expression!r} never matches")

    def _day_matches(self, t: datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self._dom_any or self._dow_any:
            return dom and dow
        return dom or dow


def _parse(part: str, name: str, lo: int, hi: int, expression: str) -> set[int]:
    values: set[int] = set()
    for item in part.split(","):
        body, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, stop = lo, hi
            elif "-" in body:
                a, b = body.split("-", 1)
                start, stop = int(a), int(b)
            else:
                start = int(body)
                stop = hi if step_text else start
        except ValueError:
            raise TrainerError(f"cron {expression!r}: {name} field {part!r} is not a number, range or step") from None
        if step < 1 or not lo <= start <= stop <= hi:
            raise TrainerError(f"cron {expression!r}: {name} field {part!r} is outside {lo}..{hi}")
        values.update(range(start, stop + 1, step))
    return values
