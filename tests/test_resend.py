"""Unit tests of the resend bookkeeping (channels_nats.resend): no server needed."""

from __future__ import annotations

import time
from typing import Any

from channels_nats.resend import AGE_EVERY, Reassembly, Retained


class Receiver:
    def __init__(self, wait: float = 2.0) -> None:
        self.asked: list[tuple[str, int, str, int, int]] = []
        self.delivered: list[Any] = []
        self.lost: list[tuple[str, str, int]] = []
        self.r = Reassembly(
            lambda *a: self.asked.append(a),
            self.delivered.append,
            lambda *a: self.lost.append(a),
            wait,
        )

    def live(self, seq: int, target: str = "t", origin: str = "o") -> None:
        """Feed a live frame; deliver it at once if the reassembly says so."""
        if self.r.observe(origin, 0, target, seq, seq):
            self.delivered.append(seq)


def test_frames_in_order_pass_straight_through() -> None:
    rx = Receiver()
    for seq in range(1, 6):
        rx.live(seq)
    assert rx.delivered == [1, 2, 3, 4, 5]
    assert rx.asked == [] and rx.r.open_gaps == 0


def test_a_run_next_in_line_passes_whole_and_moves_the_numbering_on() -> None:
    rx = Receiver()
    assert rx.r.observe_run("o", 0, "t", 1, 50)  # the first seen
    assert rx.r.observe_run("o", 0, "t", 51, 60)
    rx.live(61)
    assert rx.delivered == [61]
    assert rx.asked == [] and rx.r.open_gaps == 0


def test_a_run_out_of_line_or_behind_a_gap_is_left_to_observe() -> None:
    rx = Receiver()
    rx.live(1)
    assert not rx.r.observe_run("o", 0, "t", 3, 9)  # 2 missing
    assert rx.asked == []  # nothing asked, nothing moved: observe() decides
    rx.live(3)  # opens the gap for 2
    assert rx.asked == [("o", 0, "t", 2, 2)]
    assert not rx.r.observe_run("o", 0, "t", 4, 9)  # the gap is still open
    rx.live(4)
    assert rx.delivered == [1]
    rx.r.resent("o", 0, "t", 2, 2)
    assert rx.delivered == [1, 2, 3, 4]


def test_a_gap_holds_later_frames_until_the_resend_fills_it() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(4)  # 2 and 3 were dropped on the way
    rx.live(5)
    assert rx.delivered == [1]
    assert rx.asked == [("o", 0, "t", 2, 3)]
    rx.r.resent("o", 0, "t", 3, 3)
    assert rx.delivered == [1]
    rx.r.resent("o", 0, "t", 2, 2)
    assert rx.delivered == [1, 2, 3, 4, 5]
    rx.live(6)
    assert rx.delivered == [1, 2, 3, 4, 5, 6]
    assert rx.lost == [] and rx.r.open_gaps == 0


def test_duplicate_resends_are_dropped_by_number() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(3)
    rx.r.resent("o", 0, "t", 2, 2)
    rx.r.resent("o", 0, "t", 2, 2)  # a second resend, after the gap closed
    rx.r.resent("o", 0, "t", 3, 3)  # one the receiver had anyway
    assert rx.delivered == [1, 2, 3]
    assert rx.r.duplicates == 2


def test_what_the_sender_no_longer_has_is_counted_lost_and_the_rest_goes_out() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(5)
    rx.r.resent("o", 0, "t", 4, 4)
    rx.r.gone("o", 0, "t", 2, 4)  # it resent all it had: 2 and 3 are gone
    assert rx.delivered == [1, 4, 5]
    assert rx.lost == [("o", "t", 2)]


def test_a_gap_nobody_answers_expires_after_the_wait() -> None:
    rx = Receiver(wait=0.5)
    rx.live(1)
    rx.live(3)
    assert rx.r.expire() == 0  # not yet
    assert rx.r.expire(time.monotonic() + 1.0) == 1
    assert rx.delivered == [1, 3]
    assert rx.lost == [("o", "t", 1)]
    rx.r.resent("o", 0, "t", 2, 2)  # too late: dropped, not delivered twice
    assert rx.delivered == [1, 3]


def test_a_new_gap_while_one_is_open_widens_it() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(3)
    rx.live(6)
    assert rx.asked == [("o", 0, "t", 2, 2), ("o", 0, "t", 4, 5)]
    for seq in (5, 2, 4):
        rx.r.resent("o", 0, "t", seq, seq)
    assert rx.delivered == [1, 2, 3, 4, 5, 6]


def test_a_mark_ahead_of_the_last_frame_asks_for_the_lost_tail() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(2)
    rx.r.mark("o", 0, "t", 4)
    assert rx.asked == [("o", 0, "t", 3, 4)]
    rx.r.resent("o", 0, "t", 3, 3)
    rx.r.resent("o", 0, "t", 4, 4)
    rx.live(5)
    assert rx.delivered == [1, 2, 3, 4, 5]


def test_a_mark_at_or_behind_the_last_frame_asks_nothing() -> None:
    rx = Receiver()
    rx.live(1)
    rx.live(2)
    rx.r.mark("o", 0, "t", 2)
    rx.r.mark("o", 0, "t", 1)
    rx.r.mark("other", 0, "t", 9)  # never heard from: nothing to compare
    assert rx.asked == []


def test_a_sender_starting_again_at_one_is_a_fresh_start() -> None:
    rx = Receiver()
    for seq in (1, 2, 3, 1, 2):
        rx.live(seq)
    assert rx.delivered == [1, 2, 3, 1, 2]


def test_targets_and_senders_are_independent() -> None:
    rx = Receiver()
    rx.live(1, target="a")
    rx.live(3, target="a")
    rx.live(1, target="b")
    rx.live(2, target="b")
    rx.live(1, origin="p")
    assert rx.delivered == [1, 1, 2, 1]


def test_retained_finds_ranges_and_forgets_by_age_bytes_and_count() -> None:
    now = [5.0]
    kept = Retained(max_age=10.0, max_bytes=100, max_frames=5, clock=lambda: now[0])
    for seq in range(1, 5):
        kept.keep(float(seq), 0, "t", "subj", 0.0, b"x" * 10, seq)
    kept.keep(4.5, 1, "g", "gsubj", 0.0, b"y", 1)
    assert [k.seq for k in kept.find("t", 2, 3)] == [2, 3]
    assert {k.target: k.seq for k in kept.latest()} == {"t": 4, "g": 1}
    kept.keep(5.0, 0, "t", "subj", 0.0, b"x", 5)  # over max_frames: 1 goes
    assert [k.seq for k in kept.find("t", 1, 9)] == [2, 3, 4, 5]
    kept.keep(6.0, 0, "t", "subj", 0.0, b"z" * 80, 6)  # over max_bytes
    assert sum(len(k.body) for k in kept.find("t", 1, 9)) <= 100
    now[0] = 30.0
    kept.keep(30.0, 0, "t", "subj", 0.0, b"", 7)  # the rest is too old
    assert [k.seq for k in kept.find("t", 1, 9)] == [7]  # a lookup ages first
    assert len(kept) == 1


def test_retained_forgets_old_frames_within_a_few_sends_without_lookups() -> None:
    kept = Retained(max_age=10.0, max_bytes=10**9, max_frames=10**6)
    kept.keep(1.0, 0, "t", "subj", 0.0, b"x", 1)
    for seq in range(2, 2 + AGE_EVERY):  # 20 s later: frame 1 is too old
        kept.keep(21.0, 0, "t", "subj", 0.0, b"x", seq)
    assert len(kept) == AGE_EVERY  # it went within AGE_EVERY sends
    assert [k[6] for k in kept._frames] == list(range(2, 2 + AGE_EVERY))


def test_retained_over_a_limit_goes_a_sixteenth_below_it_and_never_above() -> None:
    kept = Retained(max_age=60.0, max_bytes=10**9, max_frames=160)
    sizes = []
    for seq in range(1, 1001):
        kept.keep(1.0, 0, "t", "subj", 0.0, b"x", seq)
        sizes.append(len(kept))
    assert max(sizes) == 160
    # Over 160, trimmed to 150; then ten sends without trimming.
    assert sizes[159:172] == [160, 150, *range(151, 161), 150]
    assert [k[6] for k in kept._frames] == list(range(1001 - len(kept), 1001))
    # A resend lookup trims only what is over a limit, not below it.
    assert len(kept.find("t", 1, 10**6)) == len(kept)


def test_a_jump_wider_than_any_sender_keeps_is_counted_not_asked() -> None:
    rx = Receiver()
    rx.r.max_gap = 10
    rx.live(1)
    rx.live(100)  # 98 missing: more than a sender keeps
    assert rx.delivered == [1, 100]
    assert rx.asked == [] and rx.lost == [("o", "t", 98)]
    rx.r.mark("o", 0, "t", 10**9)  # a hostile mark asks nothing either
    assert rx.asked == [] and rx.r.open_gaps == 0


def test_all_open_gaps_together_wait_for_a_bounded_number_of_frames() -> None:
    rx = Receiver()
    rx.r.max_missing = 10
    for origin in ("a", "b", "c"):
        rx.live(1, origin=origin)
    rx.live(6, origin="a")  # 4 missing: waits
    rx.live(6, origin="b")  # 4 more: waits (8 of 10)
    rx.live(6, origin="c")  # 4 more would be 12: counted at once instead
    assert rx.asked == [("a", 0, "t", 2, 5), ("b", 0, "t", 2, 5)]
    assert rx.lost == [("c", "t", 4)] and rx.delivered[-1] == 6
    for seq in range(2, 6):
        rx.r.resent("a", 0, "t", seq, seq)
    assert rx.r._missing == 4  # a's gap closed and gave its share back
