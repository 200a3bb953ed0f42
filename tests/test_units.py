"""Pure-logic units: credit windows, credit batching, groups, inbox, stats.

None of these tests needs a NATS server. Time is faked by patching the
``time`` functions the unit under test reads.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

import channels_nats.flow
import channels_nats.groups
import channels_nats.inbox
import channels_nats.stats
from channels_nats.exceptions import LayerClosed
from channels_nats.flow import CreditBatcher, CreditWindows
from channels_nats.groups import GroupRegistry
from channels_nats.inbox import Entry, Inbox
from channels_nats.stats import Stats


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def flow_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(channels_nats.flow.time, "monotonic", clock)
    return clock


@pytest.fixture
def groups_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(channels_nats.groups.time, "time", clock)
    return clock


@pytest.fixture
def inbox_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(channels_nats.inbox.time, "time", clock)
    return clock


@pytest.fixture
def stats_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(channels_nats.stats.time, "monotonic", clock)
    return clock


# -- CreditWindows -------------------------------------------------------------


def take_all(windows: CreditWindows, channel: str, limit: int = 1000) -> int:
    taken = 0
    while taken < limit and windows.take(channel):
        taken += 1
    return taken


def test_credit_window_takes_until_capacity_then_refuses(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 3, expiry=10)
    assert [windows.take("c") for _ in range(3)] == [True, True, True]
    assert windows.take("c") is False
    assert windows.take("c") is False


def test_credit_windows_use_per_channel_capacity(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 2 if ch == "small" else 5, expiry=10)
    assert take_all(windows, "small") == 2
    assert take_all(windows, "big") == 5


def test_credit_windows_of_channels_are_independent(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 2, expiry=10)
    assert take_all(windows, "a") == 2
    assert windows.take("b") is True


def test_give_back_restores_credits(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 3, expiry=10)
    assert take_all(windows, "c") == 3
    windows.give_back("c")
    assert windows.take("c") is True
    assert windows.take("c") is False
    windows.give_back("c", 2)
    assert take_all(windows, "c") == 2


def test_give_back_beyond_capacity_is_capped(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 3, expiry=10)
    assert windows.take("c") is True
    windows.give_back("c", 100)
    assert take_all(windows, "c") == 3


def test_give_back_for_unknown_channel_grants_nothing_extra(
    flow_clock: FakeClock,
) -> None:
    windows = CreditWindows(lambda ch: 3, expiry=10)
    windows.give_back("c", 5)
    assert take_all(windows, "c") == 3


def test_exhausted_window_refills_after_expiry(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 2, expiry=10)
    assert take_all(windows, "c") == 2
    flow_clock.now += 5
    assert windows.take("c") is False
    flow_clock.now += 5  # exactly expiry since the last take: still full
    assert windows.take("c") is False
    flow_clock.now += 0.01
    assert take_all(windows, "c") == 2


def test_refused_takes_do_not_postpone_the_refill(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 1, expiry=10)
    assert windows.take("c") is True
    for _ in range(10):
        flow_clock.now += 1
        assert windows.take("c") is False
    flow_clock.now += 0.5
    assert windows.take("c") is True


def test_partial_give_back_restarts_the_expiry_clock(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 2, expiry=10)
    assert take_all(windows, "c") == 2
    flow_clock.now += 8
    windows.give_back("c")
    assert windows.take("c") is True
    flow_clock.now += 8  # 16s after the first takes, 8s after the last one
    assert windows.take("c") is False


def test_clear_forgets_every_window(flow_clock: FakeClock) -> None:
    windows = CreditWindows(lambda ch: 1, expiry=10)
    assert windows.take("c") is True
    windows.clear()
    assert windows.take("c") is True


# -- CreditBatcher -------------------------------------------------------------


class BatcherProbe:
    def __init__(self, batch: int = 3) -> None:
        self.sent: list[tuple[str, str, int]] = []
        self.scheduled = 0
        self.batcher = CreditBatcher(lambda ch: batch, self.send, self.schedule)

    def send(self, origin: str, channel: str, n: int) -> None:
        self.sent.append((origin, channel, n))

    def schedule(self) -> None:
        self.scheduled += 1


def test_batcher_sends_when_batch_is_reached() -> None:
    probe = BatcherProbe(batch=3)
    probe.batcher.consumed("o", "c")
    probe.batcher.consumed("o", "c")
    assert probe.sent == []
    probe.batcher.consumed("o", "c")
    assert probe.sent == [("o", "c", 3)]


def test_batcher_sends_at_once_when_one_call_exceeds_batch() -> None:
    probe = BatcherProbe(batch=3)
    probe.batcher.consumed("o", "c", 5)
    assert probe.sent == [("o", "c", 5)]
    assert probe.scheduled == 0


def test_batcher_schedules_flush_once_until_flush_runs() -> None:
    probe = BatcherProbe(batch=10)
    for _ in range(4):
        probe.batcher.consumed("o", "c")
    probe.batcher.consumed("o2", "c")
    probe.batcher.consumed("o", "c2")
    assert probe.scheduled == 1
    assert probe.sent == []
    probe.batcher.flush()
    assert sorted(probe.sent) == [("o", "c", 4), ("o", "c2", 1), ("o2", "c", 1)]
    probe.batcher.consumed("o", "c")
    assert probe.scheduled == 2


def test_batcher_flush_sends_pending_counts_once() -> None:
    probe = BatcherProbe(batch=3)
    probe.batcher.consumed("o", "c", 2)
    probe.batcher.flush()
    assert probe.sent == [("o", "c", 2)]
    probe.batcher.flush()
    assert probe.sent == [("o", "c", 2)]


def test_batcher_flush_with_nothing_pending_sends_nothing() -> None:
    probe = BatcherProbe()
    probe.batcher.flush()
    assert probe.sent == []


def test_batcher_counts_each_sender_channel_pair_separately() -> None:
    probe = BatcherProbe(batch=2)
    probe.batcher.consumed("a", "c")
    probe.batcher.consumed("b", "c")
    probe.batcher.consumed("a", "d")
    assert probe.sent == []
    probe.batcher.consumed("b", "c")
    assert probe.sent == [("b", "c", 2)]


def test_batcher_total_sent_equals_total_consumed() -> None:
    probe = BatcherProbe(batch=4)
    for i in range(23):
        probe.batcher.consumed("o", "c", 1 + i % 3)
    probe.batcher.flush()
    assert sum(n for _, _, n in probe.sent) == sum(1 + i % 3 for i in range(23))


def test_batcher_clear_discards_pending_counts() -> None:
    probe = BatcherProbe(batch=5)
    probe.batcher.consumed("o", "c", 2)
    probe.batcher.clear()
    probe.batcher.flush()
    assert probe.sent == []


# -- GroupRegistry -------------------------------------------------------------


def test_group_add_returns_true_only_for_first_member(groups_clock: FakeClock) -> None:
    groups = GroupRegistry(group_expiry=100)
    assert groups.add("g", "a") is True
    assert groups.add("g", "b") is False
    assert groups.add("g", "a") is False
    assert sorted(groups.members("g")) == ["a", "b"]


def test_group_discard_returns_true_when_group_emptied(groups_clock: FakeClock) -> None:
    groups = GroupRegistry(group_expiry=100)
    groups.add("g", "a")
    groups.add("g", "b")
    assert groups.discard("g", "a") is False
    assert groups.discard("g", "x") is False
    assert groups.discard("g", "b") is True
    assert groups.discard("g", "b") is False
    assert groups.members("g") == []
    assert groups.has_members("g") is False
    assert groups.add("g", "a") is True


def test_group_discard_of_unknown_group_returns_false(groups_clock: FakeClock) -> None:
    assert GroupRegistry(group_expiry=100).discard("nope", "a") is False


def test_group_members_evicts_entries_older_than_expiry(
    groups_clock: FakeClock,
) -> None:
    groups = GroupRegistry(group_expiry=100)
    groups.add("g", "old")
    groups_clock.now += 50
    groups.add("g", "new")
    groups_clock.now += 50  # "old" is exactly group_expiry old: kept
    assert sorted(groups.members("g")) == ["new", "old"]
    groups_clock.now += 0.5
    assert groups.members("g") == ["new"]
    groups_clock.now += 50
    assert groups.members("g") == []
    assert groups.has_members("g") is False
    assert groups.names() == []


def test_group_add_refreshes_membership(groups_clock: FakeClock) -> None:
    groups = GroupRegistry(group_expiry=100)
    groups.add("g", "a")
    groups_clock.now += 90
    groups.add("g", "a")
    groups_clock.now += 90
    assert groups.members("g") == ["a"]


def test_group_sweep_returns_groups_it_emptied(groups_clock: FakeClock) -> None:
    groups = GroupRegistry(group_expiry=100)
    groups.add("stale", "a")
    groups.add("mixed", "a")
    groups_clock.now += 60
    groups.add("mixed", "b")
    groups.add("fresh", "c")
    groups_clock.now += 60
    assert groups.sweep() == ["stale"]
    assert groups.members("mixed") == ["b"]
    assert groups.members("fresh") == ["c"]
    assert sorted(groups.names()) == ["fresh", "mixed"]
    assert groups.sweep() == []


def test_group_clear_returns_all_names(groups_clock: FakeClock) -> None:
    groups = GroupRegistry(group_expiry=100)
    groups.add("g1", "a")
    groups.add("g2", "a")
    assert sorted(groups.clear()) == ["g1", "g2"]
    assert groups.names() == []


# -- Inbox -----------------------------------------------------------------------


class InboxProbe:
    def __init__(self, capacity: int = 10, expiry: float = 60) -> None:
        self.stats = Stats()
        self.consumed: list[tuple[str, str, int]] = []
        self.inbox = Inbox(expiry, lambda ch: capacity, self.stats, self._on_consumed)

    def _on_consumed(self, origin: str, channel: str, n: int) -> None:
        self.consumed.append((origin, channel, n))


def entry(body: bytes, origin: str = "", sent_at: float | None = None) -> Entry:
    return Entry(time.time() if sent_at is None else sent_at, body, origin)


async def wait_until_waiting(task: asyncio.Task[Entry]) -> None:
    # Let the task run up to its ``await``; it must not have finished.
    for _ in range(3):
        await asyncio.sleep(0)
    assert not task.done()


async def test_inbox_get_returns_messages_in_put_order() -> None:
    probe = InboxProbe()
    entries = [entry(b"%d" % i) for i in range(5)]
    for e in entries:
        assert probe.inbox.put("c", e, enforce_capacity=True) is True
    assert [await probe.inbox.get("c") for _ in entries] == entries
    assert len(probe.inbox) == 0


async def test_inbox_channels_are_separate() -> None:
    probe = InboxProbe()
    a, b = entry(b"a"), entry(b"b")
    probe.inbox.put("a", a, enforce_capacity=True)
    probe.inbox.put("b", b, enforce_capacity=True)
    assert await probe.inbox.get("b") == b
    assert await probe.inbox.get("a") == a


async def test_inbox_get_waits_until_put() -> None:
    probe = InboxProbe()
    task = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(task)
    e = entry(b"x")
    probe.inbox.put("c", e, enforce_capacity=True)
    assert await task == e


async def test_inbox_two_waiters_each_get_one_message() -> None:
    probe = InboxProbe()
    first = asyncio.create_task(probe.inbox.get("c"))
    second = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(first)
    await wait_until_waiting(second)
    e1, e2 = entry(b"1"), entry(b"2")
    probe.inbox.put("c", e1, enforce_capacity=True)
    probe.inbox.put("c", e2, enforce_capacity=True)
    assert await first == e1
    assert await second == e2
    assert len(probe.inbox) == 0


async def test_inbox_a_run_wakes_one_waiter_per_message_in_order() -> None:
    probe = InboxProbe(capacity=2)
    waiting = [asyncio.create_task(probe.inbox.get("c")) for _ in range(3)]
    for task in waiting:
        await wait_until_waiting(task)
    run = [entry(b"%d" % i, origin="o") for i in range(5)]
    probe.inbox.put_run("c", run)  # beyond capacity: it came on credit
    assert [await task for task in waiting] == run[:3]
    assert [await probe.inbox.get("c") for _ in range(2)] == run[3:]
    assert probe.stats.snapshot()["dropped_capacity"] == 0


async def test_inbox_one_message_wakes_exactly_one_of_two_waiters() -> None:
    probe = InboxProbe()
    first = asyncio.create_task(probe.inbox.get("c"))
    second = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(first)
    await wait_until_waiting(second)
    e = entry(b"only")
    probe.inbox.put("c", e, enforce_capacity=True)
    assert await first == e
    await wait_until_waiting(second)
    e2 = entry(b"later")
    probe.inbox.put("c", e2, enforce_capacity=True)
    assert await second == e2


async def test_inbox_cancelled_get_loses_no_message() -> None:
    probe = InboxProbe()
    task = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(task)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    e = entry(b"x")
    assert probe.inbox.put("c", e, enforce_capacity=True) is True
    assert await asyncio.wait_for(probe.inbox.get("c"), 5) == e


async def test_inbox_waiter_woken_then_cancelled_passes_wakeup_on() -> None:
    probe = InboxProbe()
    first = asyncio.create_task(probe.inbox.get("c"))
    second = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(first)
    await wait_until_waiting(second)
    e = entry(b"x")
    # Same loop iteration: put() picks ``first`` to wake, then it is cancelled
    # before it can run and take the message.
    probe.inbox.put("c", e, enforce_capacity=True)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == e


async def test_inbox_woken_then_cancelled_waiter_leaves_message_buffered() -> None:
    probe = InboxProbe()
    task = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(task)
    e = entry(b"x")
    probe.inbox.put("c", e, enforce_capacity=True)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(probe.inbox) == 1
    assert await asyncio.wait_for(probe.inbox.get("c"), 5) == e


async def test_inbox_never_returns_expired_messages(inbox_clock: FakeClock) -> None:
    probe = InboxProbe(expiry=10)
    old = entry(b"old", sent_at=inbox_clock.now)
    probe.inbox.put("c", old, enforce_capacity=True)
    inbox_clock.now += 5
    fresh = entry(b"fresh", sent_at=inbox_clock.now)
    probe.inbox.put("c", fresh, enforce_capacity=True)
    inbox_clock.now += 5.5
    assert await probe.inbox.get("c") == fresh
    assert probe.stats.snapshot()["dropped_expired"] == 1


async def test_inbox_get_of_only_expired_messages_waits(inbox_clock: FakeClock) -> None:
    probe = InboxProbe(expiry=10)
    for i in range(3):
        probe.inbox.put(
            "c", entry(b"%d" % i, sent_at=inbox_clock.now), enforce_capacity=True
        )
    inbox_clock.now += 11
    task = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(task)
    assert probe.stats.snapshot()["dropped_expired"] == 3
    e = entry(b"new", sent_at=inbox_clock.now)
    probe.inbox.put("c", e, enforce_capacity=True)
    assert await task == e


async def test_inbox_sweep_drops_expired_and_counts_them(
    inbox_clock: FakeClock,
) -> None:
    probe = InboxProbe(expiry=10)
    probe.inbox.put(
        "c", entry(b"a", "peer", sent_at=inbox_clock.now), enforce_capacity=True
    )
    inbox_clock.now += 11
    probe.inbox.sweep()
    assert len(probe.inbox) == 0
    assert probe.stats.snapshot()["dropped_expired"] == 1
    assert probe.consumed == [("peer", "c", 1)]


async def test_inbox_on_consumed_gets_expired_entries_of_other_processes_only(
    inbox_clock: FakeClock,
) -> None:
    probe = InboxProbe(expiry=10)
    sent = inbox_clock.now
    for origin in ["p1", "", "p2", "p1", ""]:
        probe.inbox.put("c", entry(b"m", origin, sent_at=sent), enforce_capacity=False)
    inbox_clock.now += 11
    fresh = entry(b"fresh", "p3", sent_at=inbox_clock.now)
    probe.inbox.put("c", fresh, enforce_capacity=False)
    assert await probe.inbox.get("c") == fresh
    assert sorted(probe.consumed) == [("p1", "c", 2), ("p2", "c", 1)]
    assert probe.stats.snapshot()["dropped_expired"] == 5


async def test_inbox_put_enforcing_capacity_refuses_at_capacity() -> None:
    probe = InboxProbe(capacity=2)
    assert probe.inbox.put("c", entry(b"1"), enforce_capacity=True) is True
    assert probe.inbox.put("c", entry(b"2"), enforce_capacity=True) is True
    assert probe.inbox.full("c") is True
    assert probe.inbox.put("c", entry(b"3"), enforce_capacity=True) is False
    assert len(probe.inbox) == 2
    await probe.inbox.get("c")
    assert probe.inbox.put("c", entry(b"4"), enforce_capacity=True) is True


async def test_inbox_put_without_enforcing_capacity_accepts_beyond_it() -> None:
    probe = InboxProbe(capacity=2)
    for i in range(5):
        assert probe.inbox.put("c", entry(b"%d" % i), enforce_capacity=False) is True
    assert len(probe.inbox) == 5
    assert probe.inbox.put("c", entry(b"x"), enforce_capacity=True) is False


async def test_inbox_expired_messages_free_capacity(inbox_clock: FakeClock) -> None:
    probe = InboxProbe(capacity=1, expiry=10)
    probe.inbox.put("c", entry(b"old", sent_at=inbox_clock.now), enforce_capacity=True)
    inbox_clock.now += 11
    assert probe.inbox.full("c") is False
    new = entry(b"new", sent_at=inbox_clock.now)
    assert probe.inbox.put("c", new, enforce_capacity=True) is True
    assert await probe.inbox.get("c") == new


async def test_inbox_close_makes_waiting_get_raise_layer_closed() -> None:
    probe = InboxProbe()
    task = asyncio.create_task(probe.inbox.get("c"))
    await wait_until_waiting(task)
    probe.inbox.close()
    with pytest.raises(LayerClosed):
        await asyncio.wait_for(task, 5)


async def test_inbox_after_close_get_raises_and_put_refuses() -> None:
    probe = InboxProbe()
    probe.inbox.put("s.p!c", entry(b"x"), enforce_capacity=True)
    probe.inbox.put("queue", entry(b"n"), enforce_capacity=True)
    probe.inbox.close()
    assert probe.inbox.put("s.p!c", entry(b"y"), enforce_capacity=False) is False
    with pytest.raises(LayerClosed):
        await probe.inbox.get("s.p!c")
    # A specific channel's messages are kept for the layer's next transport;
    # a normal channel's go back to JetStream with the closed connection.
    assert {ch: [e.body for e in es] for ch, es in probe.inbox.detach().items()} == {
        "s.p!c": [b"x"]
    }
    assert probe.stats.snapshot()["dropped_flushed"] == 0


async def test_inbox_clear_drops_messages_but_waiters_keep_waiting() -> None:
    probe = InboxProbe()
    probe.inbox.put("a", entry(b"1"), enforce_capacity=True)
    probe.inbox.put("a", entry(b"2"), enforce_capacity=True)
    task = asyncio.create_task(probe.inbox.get("b"))
    await wait_until_waiting(task)
    assert probe.inbox.clear() == 2
    assert probe.stats.snapshot()["dropped_flushed"] == 2
    await wait_until_waiting(task)
    e = entry(b"3")
    probe.inbox.put("b", e, enforce_capacity=True)
    assert await task == e


# -- Stats -------------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name.startswith("channels_nats") and r.levelno == logging.WARNING
    ]


def test_stats_drop_counts_every_call_but_logs_once_per_interval(
    stats_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    stats = Stats(warn_interval=10)
    for i in range(5):
        stats.drop("dropped_expired", "dropped %d", i)
        stats_clock.now += 1
    assert stats.snapshot()["dropped_expired"] == 5
    assert [r.getMessage() for r in _warnings(caplog)] == ["dropped 0"]


def test_stats_drop_counts_n(stats_clock: FakeClock) -> None:
    stats = Stats(warn_interval=10)
    stats.drop("dropped_expired", "x", n=3)
    stats.drop("dropped_expired", "x", n=4)
    assert stats.snapshot()["dropped_expired"] == 7


def test_stats_drop_rate_limits_each_kind_separately(
    stats_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    stats = Stats(warn_interval=10)
    stats.drop("dropped_expired", "expired")
    stats.drop("malformed_frames", "malformed")
    stats.drop("dropped_expired", "expired")
    stats.drop("malformed_frames", "malformed")
    assert [r.getMessage() for r in _warnings(caplog)] == ["expired", "malformed"]


def test_stats_next_log_after_interval_mentions_suppressed_count(
    stats_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    stats = Stats(warn_interval=10)
    stats.drop("dropped_capacity", "full %s", "c1")
    stats.drop("dropped_capacity", "full %s", "c2")
    stats.drop("dropped_capacity", "full %s", "c3", n=2)
    stats_clock.now += 9.9
    stats.drop("dropped_capacity", "full %s", "c4")
    assert len(_warnings(caplog)) == 1
    stats_clock.now += 0.2  # 10.1s after the first warning
    stats.drop("dropped_capacity", "full %s", "c5")
    # The suppressed count may be appended to the message or logged next to it.
    after_interval = [r.getMessage() for r in _warnings(caplog)][1:]
    assert after_interval
    assert any(m.startswith("full c5") for m in after_interval)
    assert any("4 more" in m for m in after_interval)
    assert stats.snapshot()["dropped_capacity"] == 6
    seen = len(_warnings(caplog))
    stats_clock.now += 10.1
    stats.drop("dropped_capacity", "full %s", "c6")
    # Nothing was suppressed since the last warning: no count is mentioned.
    assert [r.getMessage() for r in _warnings(caplog)][seen:] == ["full c6"]


def test_stats_snapshot_has_every_documented_counter() -> None:
    snapshot = Stats().snapshot()
    assert set(channels_nats.stats.COUNTERS) <= set(snapshot)
    assert all(snapshot[name] == 0 for name in channels_nats.stats.COUNTERS)


def test_stats_incr_adds_without_logging(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="channels_nats")
    stats = Stats()
    stats.incr("reconnects")
    stats.incr("reconnects", 4)
    assert stats.snapshot()["reconnects"] == 5
    assert _warnings(caplog) == []


# -- sequence numbers ------------------------------------------------------------


def test_sequencer_numbers_each_target_from_one() -> None:
    from channels_nats.sequence import Sequencer

    seq = Sequencer()
    assert [seq.next("a"), seq.next("a"), seq.next("b"), seq.next("a")] == [1, 2, 1, 3]


def test_sequence_state_survives_one_sweep_and_goes_after_two() -> None:
    import time

    from channels_nats.resend import Reassembly
    from channels_nats.sequence import Sequencer

    asked: list[tuple[object, ...]] = []
    seq = Sequencer()
    gaps = Reassembly(
        lambda *a: asked.append(a), lambda frame: None, lambda *a: None, 2.0
    )
    seq.next("t")
    assert gaps.observe("p", 1, "t", 7, None)
    seq.sweep()
    gaps.sweep()
    assert seq.next("t") == 2  # used since: kept
    assert not gaps.observe("p", 1, "t", 9, None)  # 8 is missing: remembered
    assert asked == [("p", 1, "t", 8, 8)]
    gaps.expire(time.monotonic() + 10)  # nobody resent 8
    for _ in range(2):
        seq.sweep()
        gaps.sweep()
    assert seq.next("t") == 1  # idle for two sweeps: forgotten
    assert gaps.observe("p", 1, "t", 30, None)  # no memory of 9: no false gap
    assert len(asked) == 1
