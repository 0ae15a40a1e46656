"""``lcsync demo``: seed the demo client with users, groups, a custom field, courses and completions.

Every environment the client has an account in gets the same 50 users (employee_id D0001 .. D0050) in groups of each
of the template's group types (Department, Location, Position in the sample accounts.yaml), with a value for each
custom field, 8 courses and about 300 completions: completed (some in the last 30 days, some expiring within the
next 60, some already expired), in progress and not started. Dates count back from ``today``, so the demo reports
always have something recent to show.

Running it again changes nothing but what the date moved (idempotent: no duplicates); it writes only the demo users
it owns and leaves every other user of the client alone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.config import Config
from core.db import Database
from core.errors import UsageError
from core.models import CustomField, CustomValue, Group, GroupType, Membership, User, UserStatus, utcnow
from core.training import Completion, CompletionStatus, Course

DEMO_CLIENT = "demo"
USERS = 50
FIRST_NAMES = ("Olivia", "Jack", "Charlotte", "William", "Amelia", "Noah", "Isla", "Oliver", "Mia", "Leo", "Ava",
               "Henry", "Grace", "Thomas", "Chloe", "Lucas", "Zoe", "James", "Ruby", "Ethan", "Sophie", "Archie",
               "Harper", "Mason", "Ella")  # fmt: skip
LAST_NAMES = ("Smith", "Jones", "Williams", "Brown", "Wilson", "Taylor", "Nguyen", "Johnson", "Martin", "White",
              "Anderson", "Walker", "Thompson", "Kelly", "O'Brien", "Lee", "Ryan", "Clarke", "Singh",
              "Chen")  # fmt: skip
GROUPS = {
    "department": ("Sales", "Support", "Engineering", "Finance", "People & Culture"),
    "location": ("Melbourne", "Sydney", "Brisbane", "Perth"),
    "position": ("Associate", "Senior Associate", "Team Lead", "Manager"),
}
COURSES = (
    ("WHS-101", "Workplace Health and Safety", 365),
    ("FIRE-101", "Fire Warden Awareness", 365),
    ("PRIV-201", "Privacy and Data Protection", 730),
    ("CODE-100", "Code of Conduct", 365),
    ("CYBER-110", "Cyber Security Essentials", 365),
    ("EEO-120", "Equal Opportunity and Respect at Work", 730),
    ("FIRST-AID", "First Aid Refresher", 1095),
    ("LEAD-300", "Leading High-Performing Teams", 0),  # no expiry
)


@dataclass(frozen=True)
class DemoCounts:
    """What one environment holds for the demo client after seeding."""

    users: int
    groups: int
    courses: int
    completions: int


def seed_demo(
    config: Config, client: str = DEMO_CLIENT, envs: list[str] | None = None, *, today: date | None = None
) -> dict[str, DemoCounts]:
    """Seed ``client`` in each of ``envs`` (default: every environment it has an account in), migrating each
    database first. Returns the counts per environment."""
    if client not in config.clients:
        raise UsageError(f"unknown client {client!r} (known: {', '.join(config.clients)})")
    accounts = list(config.clients[client].accounts)
    for env in envs or []:
        if env not in accounts:
            raise UsageError(
                f"client {client!r} has no account in environment {env!r} (accounts: {', '.join(accounts)})"
            )
    today = today or date.today()
    counts: dict[str, DemoCounts] = {}
    for env in envs or accounts:
        database = Database(env, config.database_url(env))
        try:
            database.upgrade()
            with database.session() as session, session.begin():
                counts[env] = _seed(session, config, client, today)
        finally:
            database.dispose()
    return counts


def _seed(session: Session, config: Config, client: str, today: date) -> DemoCounts:
    template = config.clients[client].import_
    group_types = template.template.group_types if template else ["Department", "Location", "Position"]
    custom_fields = template.template.custom_fields if template else ["Cost Centre"]
    users = _users(session, client)
    groups = _groups(session, client, users, group_types)
    _custom_values(session, client, users, custom_fields)
    courses = _courses(session, client)
    completions = _completions(session, client, users, courses, today)
    return DemoCounts(len(users), groups, len(courses), completions)


def _get(session: Session, model: type[GroupType] | type[CustomField], client: str, name: str) -> int:
    found = session.scalar(select(model.id).where(model.client == client, model.name == name))
    if found is not None:
        return found
    row = model(client=client, name=name)
    session.add(row)
    session.flush()
    return row.id


def _users(session: Session, client: str) -> dict[str, int]:
    """Create or refresh the demo users; employee_id -> user id."""
    existing = {user.employee_id: user for user in session.scalars(select(User).where(User.client == client))}
    ids: dict[str, int] = {}
    for number in range(1, USERS + 1):
        employee_id = f"D{number:04d}"
        first, last = FIRST_NAMES[number % len(FIRST_NAMES)], LAST_NAMES[(number * 7) % len(LAST_NAMES)]
        email = f"{first}.{last}{number}@demo.example".lower().replace("'", "")
        values = {
            "username": email,
            "first_name": first,
            "last_name": last,
            "email": email,
            "status": UserStatus.SUSPENDED if number % 17 == 0 else UserStatus.ACTIVE,
            "start_date": date(2018, 1, 8) + timedelta(days=number * 53),
            "job_title": None,
        }
        user = existing.get(employee_id)
        if user is None:
            user = User(client=client, employee_id=employee_id, **values)
            session.add(user)
        else:
            for name, value in values.items():
                setattr(user, name, value)
            user.row_hash = None  # not written by an import: the next import compares field by field
            user.updated_at = utcnow()
        session.flush()
        ids[employee_id] = user.id
    for number in range(1, USERS + 1):  # everyone reports to one of the first five (who report to D0001)
        manager = 1 if number <= 5 else 1 + number % 5
        user_id = ids[f"D{number:04d}"]
        session.get_one(User, user_id).manager_id = None if number == 1 else ids[f"D{manager:04d}"]
    return ids


def _groups(session: Session, client: str, users: dict[str, int], group_types: list[str]) -> int:
    """Each demo user's group of every group type; returns how many groups exist."""
    count = 0
    for type_name in group_types:
        type_id = _get(session, GroupType, client, type_name)
        pool = GROUPS.get(type_name.casefold(), tuple(f"{type_name} {letter}" for letter in "ABC"))
        group_ids: dict[str, int] = {}
        for name in pool:
            found = session.scalar(select(Group.id).where(Group.group_type_id == type_id, Group.name == name))
            if found is None:
                group = Group(group_type_id=type_id, name=name)
                session.add(group)
                session.flush()
                found = group.id
            group_ids[name] = found
        count += len(group_ids)
        session.execute(
            delete(Membership).where(Membership.group_type_id == type_id, Membership.user_id.in_(users.values()))
        )
        session.add_all(
            Membership(user_id=user_id, group_type_id=type_id, group_id=group_ids[pool[index % len(pool)]])
            for index, user_id in enumerate(users.values())
        )
    session.flush()
    return count


def _custom_values(session: Session, client: str, users: dict[str, int], custom_fields: list[str]) -> None:
    for field_name in custom_fields:
        field_id = _get(session, CustomField, client, field_name)
        session.execute(
            delete(CustomValue).where(CustomValue.field_id == field_id, CustomValue.user_id.in_(users.values()))
        )
        session.add_all(
            CustomValue(user_id=user_id, field_id=field_id, value=f"CC-{100 + index % 6 * 10}")
            for index, user_id in enumerate(users.values())
            if index % 11 != 10  # a few without a value
        )
    session.flush()


def _courses(session: Session, client: str) -> dict[str, tuple[int, int]]:
    """code -> (course id, validity in days; 0 for none)."""
    existing = {course.code: course for course in session.scalars(select(Course).where(Course.client == client))}
    found: dict[str, tuple[int, int]] = {}
    for code, name, valid_days in COURSES:
        course = existing.get(code)
        if course is None:
            course = Course(client=client, code=code, name=name)
            session.add(course)
            session.flush()
        course.name = name
        found[code] = (course.id, valid_days)
    return found


def _completions(
    session: Session, client: str, users: dict[str, int], courses: dict[str, tuple[int, int]], today: date
) -> int:
    """About three quarters of all (user, course) pairs, with statuses and dates drawn from a generator seeded by
    the pair, so that every run (and every environment) draws the same."""
    existing = {
        (completion.user_id, completion.course_id): completion
        for completion in session.scalars(select(Completion).where(Completion.user_id.in_(users.values())))
    }
    count = 0
    for employee_id, user_id in users.items():
        for code, (course_id, valid_days) in courses.items():
            draw = random.Random(f"{employee_id}/{code}")
            if draw.random() < 0.25:
                continue
            values = _completion_values(draw, valid_days, today)
            completion = existing.get((user_id, course_id))
            if completion is None:
                session.add(Completion(client=client, user_id=user_id, course_id=course_id, **values))
            elif any(getattr(completion, name) != value for name, value in values.items()):
                for name, value in values.items():
                    setattr(completion, name, value)
                completion.updated_at = utcnow()
            count += 1
    session.flush()
    return count


def _completion_values(draw: random.Random, valid_days: int, today: date) -> dict[str, object]:
    roll = draw.random()
    if roll < 0.12:
        return _values(CompletionStatus.NOT_STARTED, None, None, None)
    if roll < 0.27:
        return _values(CompletionStatus.IN_PROGRESS, None, None, None)
    # Completed: a third within the last 30 days, the rest up to about two years ago.
    days_ago = draw.randint(0, 29) if draw.random() < 0.33 else draw.randint(30, 760)
    completed = today - timedelta(days=days_ago)
    expires = completed + timedelta(days=valid_days) if valid_days else None
    score = Decimal(draw.randint(120, 200)) / 2  # 60.0 .. 100.0 in halves
    status = CompletionStatus.EXPIRED if expires is not None and expires < today else CompletionStatus.COMPLETED
    return _values(status, completed, expires, score.quantize(Decimal("0.01")))


def _values(status: str, completed: date | None, expires: date | None, score: Decimal | None) -> dict[str, object]:
    return {"completion_status": str(status), "completed_at": completed, "expires_at": expires, "score": score}
