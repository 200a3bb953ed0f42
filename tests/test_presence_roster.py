"""The roster engine as pure state: deltas, gaps, snapshots, failure detection.

Time is given explicitly (``now``), so these tests fake nothing but time.
"""

from __future__ import annotations

import pytest

from channels_nats.presence import protocol as P
from channels_nats.presence.diffs import DiffBuffer
from channels_nats.presence.nodes import Change
from channels_nats.presence.roster import Roster
from channels_nats.presence.settings import PresenceSettings

ME, A = "me0000000000", "aaaaaaaaaaaa"
S = PresenceSettings()  # heartbeat 1 s, ttl 10 s


def roster() -> Roster:
    return Roster(ME, 1, S, host="h", pid=1, started=0.0, now=0.0)


def join(
    seq: int,
    room: str = "r",
    session: str = "s!1",
    user: str | None = "u1",
    meta: str = "{}",
    node: str = A,
    inc: int = 5,
    at: float = 1.0,
) -> P.Delta:
    return P.Delta(P.JOIN, node, inc, seq, room, session, user, meta, at, "")


def leave(
    seq: int,
    room: str = "r",
    session: str = "s!1",
    reason: str = "leave",
    node: str = A,
    inc: int = 5,
) -> P.Delta:
    return P.Delta(P.LEAVE, node, inc, seq, room, session, None, "{}", 0.0, reason)


def update(seq: int, meta: str, room: str = "r", session: str = "s!1") -> P.Delta:
    return P.Delta(P.UPDATE, A, 5, seq, room, session, None, meta, 0.0, "")


def kinds(changes: list[Change]) -> list[str]:
    return [c.kind for c in changes]


def summary_of(r: Roster, node: str) -> P.Summary:
    return r.nodes[node].summary()


# -- local members ---------------------------------------------------------------------


def test_local_join_update_leave_number_their_deltas() -> None:
    r = roster()
    seq, ch = r.local_join("r", "s!1", "u1", "{}", 1.0)
    assert seq == 1 and kinds(ch) == ["join", "online"]
    seq, ch = r.local_update("r", "s!1", '{"a":1}')
    assert seq == 2 and kinds(ch) == ["update"] and ch[0].previous is not None
    seq, ch = r.local_leave("r", "s!1", "disconnect")
    assert seq == 3 and kinds(ch) == ["leave", "offline"]
    assert ch[0].reason == "disconnect"
    assert r.local.digest == 0 and r.rooms == {} and r.users == {}


def test_rejoin_with_same_meta_is_a_no_op_and_other_user_is_refused() -> None:
    r = roster()
    r.local_join("r", "s!1", "u1", "{}", 1.0)
    assert r.local_join("r", "s!1", "u1", "{}", 2.0) == (0, [])
    seq, ch = r.local_join("r", "s!1", "u1", '{"x":1}', 2.0)
    assert seq == 2 and kinds(ch) == ["update"]
    with pytest.raises(ValueError, match="leave first"):
        r.local_join("r", "s!1", "u2", "{}", 3.0)
    with pytest.raises(KeyError):
        r.local_update("r", "s!404", "{}")
    assert r.local_leave("r", "s!404", "leave") == (0, [])


def test_list_and_count_follow_phoenix_shape() -> None:
    r = roster()
    r.local_join("r", "s!1", "u1", '{"status":"away"}', 2.0)
    r.local_join("r", "s!2", "u1", "{}", 1.0)
    r.local_join("r", "s!3", None, "{}", 3.0)
    listed = r.list("r")
    assert set(listed) == {"u1", "s!3"}
    metas = listed["u1"]["metas"]
    assert [m["session"] for m in metas] == ["s!2", "s!1"]  # by joined_at
    assert metas[1] == {
        "status": "away",
        "session": "s!1",
        "node": ME,
        "joined_at": 2.0,
    }
    assert r.count("r") == (3, 2)
    assert r.room_counts() == {"r": 3}


# -- remote deltas ---------------------------------------------------------------------


def test_in_order_deltas_apply_and_user_goes_online_once() -> None:
    r = roster()
    assert kinds(r.apply_delta(join(1), 0.0)) == ["join", "online"]
    assert kinds(r.apply_delta(join(2, room="r2"), 0.0)) == ["join"]
    assert kinds(r.apply_delta(update(3, '{"a":1}'), 0.0)) == ["update"]
    assert kinds(r.apply_delta(leave(4), 0.0)) == ["leave"]
    assert kinds(r.apply_delta(leave(5, room="r2", reason="disconnect"), 0.0)) == [
        "leave",
        "offline",
    ]
    assert r.nodes[A].seq == 5 and r.nodes[A].digest == 0


def test_duplicate_delta_is_ignored() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    assert r.apply_delta(join(1), 0.0) == []


def test_reordered_deltas_wait_and_then_apply_in_order() -> None:
    r = roster()
    assert r.apply_delta(join(2, session="s!2"), 0.0) == []
    assert r.nodes[A].gap_since == 0.0
    ch = r.apply_delta(join(1), 0.1)
    assert [c.member.session for c in ch if c.kind == "join"] == ["s!1", "s!2"]
    assert r.nodes[A].seq == 2 and r.nodes[A].gap_since is None
    assert ("fetch", A) not in r.due(5.0)


def test_a_lost_delta_triggers_a_fetch_after_the_reorder_window() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.apply_delta(join(3, session="s!3"), 0.0)  # 2 is lost
    assert ("fetch", A) not in r.due(0.1)
    assert ("fetch", A) in r.due(0.6)
    assert ("fetch", A) not in r.due(0.7)  # one fetch at a time


def test_heartbeat_ahead_of_us_is_a_gap_and_digest_mismatch_a_resync() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.apply_heartbeat(P.Heartbeat(A, 5, 2, 123, 1), 0.0)
    assert ("fetch", A) in r.due(0.6)
    r2 = roster()
    r2.apply_delta(join(1), 0.0)
    r2.apply_heartbeat(P.Heartbeat(A, 5, 1, 999, 1), 0.0)  # same seq, other digest
    assert r2.nodes[A].needs_resync
    assert ("fetch", A) in r2.due(0.0)


def test_matching_heartbeat_needs_nothing() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    nv = r.nodes[A]
    r.apply_heartbeat(P.Heartbeat(A, 5, 1, nv.digest, 1), 0.5)
    assert r.due(0.6) == []


# -- snapshots -------------------------------------------------------------------------


def snapshot_members(*sessions: str, meta: str = "{}") -> list[P.Member]:
    return [P.Member("r", s, "u1", meta, A, 1.0) for s in sessions]


def test_snapshot_replaces_the_copy_and_reports_differences() -> None:
    r = roster()
    r.apply_delta(join(1, session="s!1"), 0.0)
    r.apply_delta(join(2, session="s!2"), 0.0)
    members = snapshot_members("s!2", "s!3")
    s = P.Summary(A, 5, 7, P.roster_digest(members), 2, "host", 9, 0.0)
    ch = r.apply_snapshot(s, members, 1.0)
    assert sorted((c.kind, c.member.session) for c in ch if c.kind != "online") == [
        ("join", "s!3"),
        ("leave", "s!1"),
    ]
    nv = r.nodes[A]
    assert nv.seq == 7 and nv.digest == s.digest and nv.host == "host"


def test_snapshot_then_buffered_deltas_apply() -> None:
    r = roster()
    r.apply_delta(join(9, session="s!9"), 0.0)  # arrives before the snapshot
    members = snapshot_members("s!1")
    s = P.Summary(A, 5, 8, P.roster_digest(members), 1, "h", 1, 0.0)
    r.apply_snapshot(s, members, 0.1)
    assert set(r.nodes[A].members) == {("r", "s!1"), ("r", "s!9")}
    assert r.nodes[A].seq == 9


def test_snapshot_with_wrong_digest_changes_nothing() -> None:
    r = roster()
    members = snapshot_members("s!1")
    with pytest.raises(P.MalformedFrame):
        r.apply_snapshot(P.Summary(A, 5, 1, 42, 1, "h", 1, 0.0), members, 0.0)
    assert A not in r.nodes and r.rooms == {}


def test_stale_snapshot_is_ignored() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.apply_delta(join(2, session="s!2"), 0.0)
    members = snapshot_members("s!1")
    s = P.Summary(A, 5, 1, P.roster_digest(members), 1, "h", 1, 0.0)
    assert r.apply_snapshot(s, members, 0.0) == []
    assert len(r.nodes[A].members) == 2


# -- incarnations and nodes going away -------------------------------------------------


def test_new_incarnation_drops_the_old_members_at_once() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    ch = r.apply_heartbeat(P.Heartbeat(A, 6, 0, 0, 0), 0.0)
    assert kinds(ch) == ["leave", "offline"] and ch[0].reason == "node_down"
    assert r.nodes[A].inc == 6 and r.nodes[A].seq == 0


def test_frames_of_an_older_incarnation_are_ignored() -> None:
    r = roster()
    r.apply_delta(join(1, inc=6), 0.0)
    assert r.apply_delta(join(2, inc=5, session="s!ghost"), 0.0) == []
    assert ("r", "s!ghost") not in r.nodes[A].members


def test_bye_drops_node_and_late_deltas_do_not_bring_ghosts_back() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    ch = r.drop_if(A, 5, "node_down", 1.0)
    assert kinds(ch) == ["leave", "offline"]
    assert r.apply_delta(join(2, session="s!late"), 1.1) == []
    assert A not in r.nodes
    # A heartbeat proves the node runs: it is tracked again.
    r.apply_heartbeat(P.Heartbeat(A, 5, 2, 7, 1), 1.2)
    assert A in r.nodes


def test_bye_of_an_older_incarnation_keeps_the_new_one() -> None:
    r = roster()
    r.apply_delta(join(1, inc=6), 0.0)
    assert r.drop_if(A, 5, "node_down", 0.0) == []
    assert A in r.nodes


def test_late_node_is_probed_and_gone_means_node_down_now() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    assert r.due(1.4) == []
    assert r.due(1.6) == [("probe", A)]
    assert r.due(1.7) == []  # probe in flight
    ch = r.probe_done(A, "gone", 1.7)
    assert kinds(ch) == ["leave", "offline"] and ch[0].reason == "node_down"


def test_gone_during_reconnect_grace_only_counts_as_a_failure() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.due(1.6)
    assert r.probe_done(A, "gone", 1.7, grace=True) == []
    assert r.nodes[A].state == "suspect"


def test_probe_timeout_is_retried_once_then_waits_for_ttl() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    assert r.due(1.6) == [("probe", A)]
    r.probe_done(A, "timeout", 2.1)
    assert r.due(2.2) == [("probe", A)]  # the one immediate retry
    r.probe_done(A, "timeout", 2.7)
    assert r.due(2.8) == []  # then one probe per heartbeat interval
    assert r.due(3.3) == [("probe", A)]
    r.probe_done(A, "timeout", 3.8)
    assert ("expire", A) not in r.due(9.9)
    assert r.due(10.1) == [("expire", A)]
    ch = r.drop_node(A, "expired", 10.1)
    assert ch[0].reason == "expired"


def test_alive_probe_refreshes_the_node() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.due(1.6)
    r.probe_done(A, "alive", 1.7)
    assert r.due(2.0) == [] and r.nodes[A].state == "alive"


def test_refresh_all_forgives_silence_after_our_own_stall() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.refresh_all(30.0)
    assert r.due(30.5) == []


def test_user_online_offline_across_nodes() -> None:
    r = roster()
    assert kinds(r.local_join("r", "s!1", "u1", "{}", 1.0)[1]) == ["join", "online"]
    assert kinds(r.apply_delta(join(1, user="u1"), 0.0)) == ["join"]
    assert kinds(r.drop_node(A, "node_down", 0.0)) == ["leave"]
    assert kinds(r.local_leave("r", "s!1", "leave")[1]) == ["leave", "offline"]


def test_fetch_failure_waits_a_heartbeat_before_retrying() -> None:
    r = roster()
    r.apply_delta(join(1), 0.0)
    r.nodes[A].needs_resync = True
    assert r.due(0.1) == [("fetch", A)]
    r.fetch_done(A, False, 0.2)
    assert r.due(0.3) == []
    assert r.due(1.25) == [("fetch", A)]


# -- diffs -----------------------------------------------------------------------------


def test_diffs_coalesce_joins_leaves_and_updates() -> None:
    r = roster()
    d = DiffBuffer()
    for c in r.local_join("r", "s!1", "u1", "{}", 1.0)[1]:
        d.record(c)
    for c in r.local_join("r", "s!2", None, "{}", 1.0)[1]:
        d.record(c)
    for c in r.local_leave("r", "s!2", "leave")[1]:  # came and went
        d.record(c)
    [(room, joins, leaves)] = d.take(r)
    assert room == "r" and list(joins) == ["u1"] and leaves == {}
    assert not d
    for c in r.local_update("r", "s!1", '{"s":"away"}')[1]:
        d.record(c)
    [(room, joins, leaves)] = d.take(r)
    assert joins["u1"]["metas"][0]["s"] == "away"
    assert "s" not in leaves["u1"]["metas"][0]


def test_a_dropped_node_is_one_diff_per_room() -> None:
    r = roster()
    for i in range(1, 1001):
        r.apply_delta(join(i, room=f"r{i % 3}", session=f"s!{i}", user=f"u{i}"), 0.0)
    d = DiffBuffer()
    for c in r.drop_node(A, "node_down", 0.0):
        d.record(c)
    diffs = d.take(r)
    assert len(diffs) == 3
    assert sum(len(leaves) for _, _, leaves in diffs) == 1000
