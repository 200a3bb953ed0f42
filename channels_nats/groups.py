"""Group memberships of the channels this process owns.

Only local members are recorded: a process subscribes to a group's subject
while it holds at least one member, and the NATS server fans each
``group_send`` out to those processes. Memberships older than
``group_expiry`` are evicted lazily, as channels_redis does.
"""

from __future__ import annotations

import threading
import time

__all__ = ["GroupRegistry"]


class GroupRegistry:
    """Thread-safe map of group name to {channel: time added}."""

    def __init__(self, group_expiry: float) -> None:
        self._expiry = group_expiry
        self._lock = threading.Lock()
        self._groups: dict[str, dict[str, float]] = {}
        # A lower bound of each group's oldest membership: members() scans
        # for expired ones only when one can have expired.
        self._oldest: dict[str, float] = {}

    def add(self, group: str, channel: str) -> bool:
        """Add (or refresh) a membership; return True if ``group`` was empty."""
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                members = self._groups[group] = {}
            was_empty = not members
            now = members[channel] = time.time()
            if was_empty:
                self._oldest[group] = now
            return was_empty

    def discard(self, group: str, channel: str) -> bool:
        """Remove a membership; return True if ``group`` is now empty."""
        with self._lock:
            members = self._groups.get(group)
            if members is None:
                return False
            members.pop(channel, None)
            if members:
                return False
            del self._groups[group]
            self._oldest.pop(group, None)
            return True

    def members(self, group: str) -> list[str]:
        """Return the unexpired local members of ``group``."""
        with self._lock:
            members = self._groups.get(group)
            if not members:
                return []
            deadline = time.time() - self._expiry
            if self._oldest.get(group, 0.0) < deadline:
                stale = [ch for ch, added in members.items() if added < deadline]
                for ch in stale:
                    del members[ch]
                if members:
                    self._oldest[group] = min(members.values())
            return list(members)

    def has_members(self, group: str) -> bool:
        with self._lock:
            return bool(self._groups.get(group))

    def names(self) -> list[str]:
        with self._lock:
            return [g for g, members in self._groups.items() if members]

    def sweep(self) -> list[str]:
        """Evict expired memberships; return the groups that became empty."""
        deadline = time.time() - self._expiry
        emptied = []
        with self._lock:
            for group, members in list(self._groups.items()):
                for ch in [ch for ch, added in members.items() if added < deadline]:
                    del members[ch]
                if not members:
                    del self._groups[group]
                    self._oldest.pop(group, None)
                    emptied.append(group)
                else:
                    self._oldest[group] = min(members.values())
        return emptied

    def clear(self) -> list[str]:
        with self._lock:
            names = list(self._groups)
            self._groups.clear()
            self._oldest.clear()
            return names
