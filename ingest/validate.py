"""Rules across the rows of a User Data file, and the two-pass plan of an import. Pure: no database.

Pass 1 (``validate``) reads the file once through ``UserFile.links()``, keeping only what the rules need (each key,
each manager link, and the errors), never the rows. Pass 2 (``Validation.valid_rows``) reads the file again and yields
the rows that may be applied.

The rules, in the order they are applied (a row rejected by one rule is not looked at by the next):

1. **Row errors** from the reader (required values, email, dates, status, ragged rows).
2. **Duplicate keys**: a key on more than one record rejects every record with it, each naming the other lines.
3. **Own manager**: a row whose manager is its own key.
4. **Management cycles**: following manager links, the file's rows taking precedence over the store's users, no user
   may reach themself. Every row of the file on a cycle is rejected; the reason draws the cycle from that row.
   A cycle among the store's users alone is not the file's doing and is left alone.
5. **Manager references**: a manager must be a user of the file on a row that is applied, or a user already in the
   store. A row whose manager is on a rejected row is rejected too ("manager 000789 is on a rejected row (line 12)"),
   unless that manager is already in the store: then the store's user is linked, as it stays. This is applied
   transitively (the reports of a rejected manager who is new are rejected in turn), because a user the import does
   not create cannot be anyone's manager; the result file then shows each user why, and the client fixes the one row
   at the top.

Memory: keys and manager links only (about 150 MB for a million rows). When a cross-row rule rejects rows, one more
cheap read of the file (keys only) finds their line numbers, so that lines need not be kept for every row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from ingest.reader import FingerprintedRecords, UserFile
from ingest.rows import RowError, UserRow


@dataclass
class Validation:
    """The outcome of pass 1: what is wrong, which records must not be applied, and every key of the file."""

    total_rows: int
    """Data records read (blank lines are not records)."""
    errors: list[RowError]
    """Sorted by line; a record may have several."""
    bad_lines: frozenset[int]
    """Lines (where each rejected record starts) of the records that must not be applied."""
    keys_in_file: frozenset[str]
    """Keys of every record, rejected ones included (a full file never suspends a user whose row was rejected)."""
    manager_keys: frozenset[str | None] | None = None
    """The keys the good records name as their manager (a superset: some of those records may be rejected later);
    the applier keeps the ids of only these among the users it creates. None: any key may be."""
    source: UserFile | None = field(default=None, repr=False)
    """The file that ``valid_rows`` reads again."""

    def valid_rows(self) -> Iterator[UserRow]:
        """Pass 2: read the file again and yield only the good rows, in file order."""
        if self.source is None:
            raise ValueError("this Validation has no source file to read rows from")
        bad = self.bad_lines
        for record in self.source.records():
            if isinstance(record, UserRow) and record.line not in bad:
                yield record

    def fingerprinted(self) -> FingerprintedRecords:
        """Pass 2 for the applier: the good records unconverted, each with a digest of its cells (see
        ingest.reader.FingerprintedRecords); an unchanged user's record is then never converted."""
        if self.source is None:
            raise ValueError("this Validation has no source file to read rows from")
        return self.source.fingerprinted(self.bad_lines)

    @property
    def valid_count(self) -> int:
        """How many records ``valid_rows`` yields."""
        return self.total_rows - len(self.bad_lines)


def validate(
    user_file: UserFile, store_managers: Mapping[str, str | None], *, allow_unknown_managers: bool = False
) -> Validation:
    """Pass 1 over ``user_file`` and the rules across rows (module docstring).

    ``store_managers`` maps employee_id -> manager employee_id (or None) for the client's users already in the store.
    ``allow_unknown_managers`` accepts a manager that is neither in the file nor in the store (``template check``
    uses it for a sample file, whose managers may well be in the LMS already).

    Raises InputFileError when the file turns out unreadable half-way (a quote never closed).
    """
    scan = user_file.links()
    links: dict[str, str | None] = dict(scan)  # key -> manager of each good record
    errors = scan.errors
    bad_lines: set[int] = set()
    bad_keys: dict[str, int] = {}  # key -> line of the first record with row errors
    keyed_bad = 0
    for error in errors:
        if error.line not in bad_lines:
            bad_lines.add(error.line)
            if error.key is not None:
                keyed_bad += 1
                bad_keys.setdefault(error.key, error.line)
    total = scan.good + len(bad_lines)
    # A duplicated key costs nothing per row: it shows as fewer distinct keys than keyed records.
    overlap = sum(1 for key in bad_keys if key in links)
    duplicates = set()
    if len(links) + len(bad_keys) - overlap != scan.good + keyed_bad:
        duplicates = user_file.duplicate_keys()
    keys_in_file = frozenset(links).union(bad_keys) if bad_keys else frozenset(links)
    manager_keys = frozenset(links.values())  # None among them: harmless
    rules = _CrossRowRules(user_file, links, store_managers, allow_unknown_managers)
    rules.run(duplicates, bad_keys)
    if rules.pending or duplicates:
        errors.extend(rules.errors(duplicates, bad_keys, bad_lines))
        errors.sort(key=lambda error: error.line)  # stable: a record's own errors stay in column order
    return Validation(
        total_rows=total,
        errors=errors,
        bad_lines=frozenset(bad_lines),
        keys_in_file=keys_in_file,
        manager_keys=manager_keys,
        source=user_file,
    )


class _CrossRowRules:
    """Rules 2 to 5 over the good records' manager links (which this consumes)."""

    def __init__(
        self,
        user_file: UserFile,
        links: dict[str, str | None],
        store: Mapping[str, str | None],
        allow_unknown_managers: bool,
    ) -> None:
        self.user_file = user_file
        self.links = links
        self.store = store
        self.allow_unknown = allow_unknown_managers
        self.manager_header = user_file.column_header("manager_id")
        # (key, reason, manager on a rejected row whose line the reason ends with) of good records a rule rejects
        self.pending: list[tuple[str, str, str | None]] = []

    def run(self, duplicates: set[str], bad_keys: Mapping[str, int]) -> None:
        links, store = self.links, self.store
        for key in duplicates:
            links.pop(key, None)
        if self.manager_header is None:
            return
        cycles, dangling = self._walk()
        for cycle in cycles:
            if len(cycle) == 1:
                key = cycle[0]
                self.pending.append((key, "a user cannot be their own manager", None))
                del links[key]
                continue
            for position, key in enumerate(cycle):
                if key in links:
                    drawn = " -> ".join([*cycle[position:], *cycle[:position], key])
                    self.pending.append((key, f"management cycle: {drawn}", None))
            for key in cycle:
                links.pop(key, None)
        rejected = set(bad_keys) | duplicates | {key for key, _, _ in self.pending}
        # Managers that are neither good rows of the file nor users of the store.
        if cycles:  # the rows on them are gone: look at every link again
            dangling = [key for key, manager in links.items() if not (manager is None or manager in links)]
        failed = [
            (key, manager)
            for key in dangling
            if (manager := links[key]) is not None
            and manager not in store
            and (manager in rejected or not self.allow_unknown)
        ]
        if not failed:
            return
        for key, manager in failed:
            del links[key]
            if manager in rejected:
                self.pending.append((key, f"manager {manager} is on a rejected row", manager))
            else:
                self.pending.append((key, f"manager {manager} is not in this file nor already in the LMS", None))
        removed = rejected | {key for key, _ in failed}
        # The reports of the rows just rejected, in turn (each chain is walked once: no cycle is left).
        verdicts: dict[str, bool] = {}
        for start in links:
            if start in verdicts:
                continue
            path: list[str] = []
            node = start
            while True:
                path.append(node)
                manager = links[node]
                if manager is None or manager in store:
                    alive = True
                    break
                if manager in verdicts:
                    alive = verdicts[manager]
                    break
                if manager not in links:  # rejected (and not in the store), or unknown and allowed
                    alive = manager not in removed
                    break
                node = manager
            for node in path:
                verdicts[node] = alive
        for key in [key for key, alive in verdicts.items() if not alive]:
            manager = links.pop(key)
            assert manager is not None
            self.pending.append((key, f"manager {manager} is on a rejected row", manager))

    def _walk(self) -> tuple[list[list[str]], list[str]]:
        """Every management cycle that goes through at least one good row of the file, and the good rows whose
        manager is neither a good row nor in the store; in one walk along the links."""
        links, store = self.links, self.store
        done: set[str] = set()  # users of the file or the store known not to lead into a cycle not yet found
        done_add = done.add
        cycles: list[list[str]] = []
        dangling: list[str] = []
        for start, manager in links.items():
            # Most managers are known by the time their reports are met: one step settles those.
            if manager is None or manager in done:
                done_add(start)
                continue
            if start in done:
                continue
            path: list[str] = []
            where: dict[str, int] = {}
            node: str | None = start
            while node is not None and node not in done and node not in where:
                where[node] = len(path)
                path.append(node)
                if node in links:
                    after = links[node]
                    if after is not None and after not in links and after not in store:
                        dangling.append(node)
                        after = None
                else:
                    after = store.get(node)
                    if after is not None and after not in links and after not in store:
                        after = None  # the store names a manager it does not hold: the chain ends
                node = after
            if node is not None and node in where:
                cycle = path[where[node] :]
                if any(key in links for key in cycle):
                    cycles.append(cycle)
            done.update(path)
        return cycles, dangling

    def errors(self, duplicates: set[str], bad_keys: Mapping[str, int], bad_lines: set[int]) -> list[RowError]:
        """The RowErrors of rules 2 to 5, with the lines found by one more read of the file; adds to ``bad_lines``."""
        wanted = duplicates | {key for key, _, _ in self.pending}
        wanted |= {manager for _, _, manager in self.pending if manager is not None and manager not in bad_keys}
        lines = self.user_file.key_lines(wanted) if wanted else {}
        key_header = self.user_file.key_header
        found: list[RowError] = []
        for key in duplicates:
            where = lines.get(key, [])
            for line in where:
                others = ", ".join(str(other) for other in where if other != line)
                reason = f"{key_header} {key} appears more than once: also on line {others}"
                found.append(RowError(line, key_header, reason, key))
                bad_lines.add(line)
        for key, reason, manager in self.pending:
            if manager is not None:
                manager_line = bad_keys.get(manager) or min(lines.get(manager, [0]))
                reason = f"{reason} (line {manager_line})" if manager_line else reason
            for line in lines.get(key, [])[:1]:
                found.append(RowError(line, self.manager_header, reason, key))
                bad_lines.add(line)
        return found
