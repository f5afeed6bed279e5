"""A cron schedule in plain words, for the phase page: ``at 05:30 every day``, ``every 15
minutes``, ``at minute 0 of hours 1,13 on Monday-Friday``. It reads the normalised fields of a
parsed ``CronSchedule`` (numbers only, seconds first), so every dialect form is covered; what
has no short phrase is spelled out field by field."""

from __future__ import annotations

from scheduler.cron import CronSchedule
from scheduler.web.render import seconds as say_seconds

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_MONTHS = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def describe(schedule: CronSchedule, zone: str) -> str:
    """``schedule`` in words, ending with its zone."""
    if schedule.every is not None:
        return f"every {say_seconds(schedule.every.total_seconds())}"
    sec, minute, hour, dom, month, dow = schedule.fields.split()
    when = _time_of_day(sec, minute, hour)
    days = _days(dom, month, dow)
    if days == " every day" and when.startswith("every"):
        days = ""
    return f"{when}{days} ({zone})"


def _time_of_day(sec: str, minute: str, hour: str) -> str:
    sec_part = "" if sec == "0" else f", second {_list(sec)}"
    if _fixed(minute) and _fixed(hour):
        return f"at {int(hour):02d}:{int(minute):02d}{sec_part}"
    if minute.startswith("*/") and hour == "*":
        return f"every {minute[2:]} minutes{sec_part}"
    if minute == "*" and hour == "*":
        return "every minute" if sec == "0" else f"every minute{sec_part}"
    if _fixed(minute) and hour == "*":
        return f"every hour at minute {minute}{sec_part}"
    if _fixed(minute) and hour.startswith("*/"):
        return f"at minute {minute} of every {hour[2:]} hours{sec_part}"
    minutes = "every minute" if minute == "*" else f"at minute {_list(minute)}"
    hours = "" if hour == "*" else f" of hour {_list(hour)}"
    return f"{minutes}{hours}{sec_part}"


def _days(dom: str, month: str, dow: str) -> str:
    parts = []
    if dom == "*" and dow == "*":
        parts.append(" every day")
    if dom != "*":
        parts.append(f" on day {_list(dom)} of the month")
    if dow != "*":
        parts.append((" or" if dom != "*" else "") + f" on {_names(dow, _DAYS)}")
    if month != "*":
        parts.append(f" in {_names(month, _MONTHS)}")
    return "".join(parts)


def _fixed(field: str) -> bool:
    return field.isdigit()


def _list(field: str) -> str:
    return field.replace(",", ", ")


def _names(field: str, names: tuple[str, ...]) -> str:
    def name(item: str) -> str:
        if "/" in item:
            return item
        low, _, high = item.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return item
        first = names[int(low) % len(names)]
        return f"{first}-{names[int(high) % len(names)]}" if high else first

    return ", ".join(name(item) for item in field.split(","))
