"""How one file's rows map onto the user store (ingest.apply): the columns a row sets, in a fixed order, its
digest's personalization, and the straight-line code compiled for that shape (a row's values; a new user's rows)."""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b
from typing import Any

from core.models import UserStatus
from ingest.rows import UserRow
from ingest.store_sql import DATE_COLUMNS, PLAIN_COLUMNS

ACTIVE = UserStatus.ACTIVE.value


class RowLayout:
    """How one file's rows map onto the store: which columns a row sets, in a fixed order, and its digest's salt.

    The reader puts in ``UserRow.fields``/``groups``/``custom`` only the template columns present in the file: a
    column missing from the file leaves the stored value alone; an empty cell (None) clears it. username and status
    are always set: username defaults to the email, status to active (a user listed in the file is a current user).

    ``prepare(row)`` is compiled for the layout (straight-line code, as the reader's fast path is): it returns the
    row's values as one tuple, ``columns`` (text, dates in ISO 8601, username and status filled in), then the manager
    key, then the groups, then the custom values. That tuple is what the digest covers.
    """

    def __init__(self, row: UserRow) -> None:
        present = row.fields
        self.columns = tuple(
            c for c in PLAIN_COLUMNS if c in present or c == "status" or (c == "username" and "email" in present)
        )
        self.sizes = (len(row.fields), len(row.groups), len(row.custom))
        self.manager_mapped = "manager_id" in present
        self.group_types = tuple(row.groups)
        self.custom_fields = tuple(row.custom)
        self.type_ids: tuple[int, ...] = ()  # filled in by _Run, which knows the client's ids
        self.field_ids: tuple[int, ...] = ()
        self.group_slots: tuple[tuple[int, int], ...] = ()  # (position in the prepared tuple, group type id)
        self.custom_slots: tuple[tuple[int, int], ...] = ()  # (position in the prepared tuple, custom field id)
        width = len(self.columns)
        self.manager_at = width
        self.groups_at = width + 1
        self.custom_at = width + 1 + len(self.group_types)
        # The plain columns of a new user, in PLAIN_COLUMNS order (None for absent ones), from a prepared tuple.
        index = {c: i for i, c in enumerate(self.columns)}
        self.plain_positions = tuple(index.get(c) for c in PLAIN_COLUMNS)
        self.adder: Callable[..., Callable[..., None]] | None = None  # compile_adder(), once the ids are known
        self.user_columns: tuple[str, ...] = ()
        # The shape is part of every digest (as BLAKE2b personalization): a file with other columns makes every
        # user a candidate once.
        shape = (self.columns, self.manager_mapped, self.group_types, self.custom_fields)
        self.person = blake2b(("v2" + repr(shape)).encode(), digest_size=16).digest()
        self.prepare: Callable[[UserRow], tuple[Any, ...]] = self._compile()
        # The same tuple as ingest.reader.FingerprintedRecords.values names it (a file's records skip the UserRow).
        self.items = (
            *(f"field:{c}" for c in self.columns),
            "field:manager_id" if self.manager_mapped else "none",
            *(f"group:{name}" for name in self.group_types),
            *(f"custom:{name}" for name in self.custom_fields),
        )

    def _compile(self) -> Callable[[UserRow], tuple[Any, ...]]:
        lines = ["def prepare(row):", "    fields = row.fields"]
        names = []
        for i, column in enumerate(self.columns):
            name = f"v{i}"
            names.append(name)
            if column == "username":
                continue  # after the email, which it defaults to
            lines.append(f"    {name} = fields.get({column!r})")
            if column in DATE_COLUMNS:
                lines.append(f"    if {name} is not None: {name} = {name}.isoformat()")
            elif column == "status":
                lines.append(f"    if {name} is None: {name} = {ACTIVE!r}")
        if "username" in self.columns:
            at = self.columns.index("username")
            email = f"v{self.columns.index('email')}" if "email" in self.columns else "None"
            lines.append(f"    v{at} = fields.get('username')")
            lines.append(f"    if v{at} is None: v{at} = {email}")
        names.append("fields.get('manager_id')" if self.manager_mapped else "None")
        if self.group_types:
            lines.append("    groups = row.groups")
            names += [f"groups.get({name!r})" for name in self.group_types]
        if self.custom_fields:
            lines.append("    custom = row.custom")
            names += [f"custom.get({name!r})" for name in self.custom_fields]
        lines.append(f"    return ({', '.join(names)},)")
        namespace: dict[str, Any] = {}
        exec(compile("\n".join(lines), f"<lcsync layout of {len(self.columns)} columns>", "exec"), namespace)
        prepare: Callable[[UserRow], tuple[Any, ...]] = namespace["prepare"]
        return prepare

    def compile_adder(self) -> None:
        """``adder(...)`` makes, for one batch, ``add(ident, key, prepared, manager_id, digest)``: the new user's
        row (``user_columns``), memberships and custom values appended to the batch's lists, as straight-line code
        for this layout (the hot path of a file of new users)."""
        present = [
            (column, at) for column, at in zip(PLAIN_COLUMNS, self.plain_positions, strict=True) if at is not None
        ]
        manager = ["manager_id"] if self.manager_mapped else []
        # What a new user's row says; the rest is the batch's constants (client, job, times) or NULL.
        self.user_columns = ("id", "employee_id", *(column for column, _ in present), *manager, "row_hash")
        plain = "".join(f"p[{at}], " for _, at in present)
        lines = [
            "def adder(users, members, values, groups, new_group):",
            *(f"    g{i} = groups[{type_id}].get" for i, (_, type_id) in enumerate(self.group_slots)),
            "    def add(ident, key, p, manager, digest):",
            f"        users((ident, key, {plain}{'manager, ' if manager else ''}digest))",
        ]
        for i, (at, type_id) in enumerate(self.group_slots):
            lines.append(f"        v = p[{at}]")
            lines.append(f"        if v is not None: members((ident, {type_id}, g{i}(v) or new_group({type_id}, v)))")
        for at, field_id in self.custom_slots:
            lines.append(f"        v = p[{at}]")
            lines.append(f"        if v is not None: values((ident, {field_id}, v))")
        lines.append("    return add")
        namespace: dict[str, Any] = {}
        exec(compile("\n".join(lines), "<lcsync new users>", "exec"), namespace)
        self.adder = namespace["adder"]

    def fits(self, row: UserRow) -> bool:
        return (len(row.fields), len(row.groups), len(row.custom)) == self.sizes

    def digest(self, prepared: tuple[Any, ...]) -> bytes:
        """64 bits of BLAKE2b over the prepared tuple (its repr is unambiguous for text and None)."""
        return blake2b(repr(prepared).encode(), digest_size=8, person=self.person).digest()
