"""The parent's group ledger, driven directly: leases, acknowledgement, redelivery, prescale phase, turns."""

from __future__ import annotations

import json

import pytest

from dispatcher.groups import RR_QUEUE, GroupError, Ledger

KEY = {"streams": ["S"], "selection": None, "prescale": 1}


def _view(file="F1", n=10_000, final=False, nxt=None, edges=None):
    return {"file": file, "counts": {"S": n}, "final": final, "next": nxt, **({"edges": edges} if edges else {})}


def _ledger(*pids, key=KEY, distribution="balanced", restore="redeliver", place=None):
    led = Ledger(linger=60)
    for pid in pids:
        led.join(pid, f"client{pid}", "g", key, distribution, restore, "oldest",
                 place if place is not None else {"file": "F1", "entries": {}}, 0.0)
    return led


def _lease(answer):
    assert "lease" in answer, answer
    return answer["lease"]


def test_leases_cover_the_file_once_then_the_group_moves_on():
    led = _ledger(1, 2)
    assert led.take(1, 100, None) == {"look": "F1", "start": "oldest", "entries": {"S": 0}}
    got = []
    for i in range(30):
        a = led.take(1 + i % 2, 400, _view(n=1_000))
        if "lease" not in a:
            break
        x = a["lease"]
        got.append((x["start"], x["stop"]))
        led.counted(1 + i % 2, x["id"], x["stop"] - x["start"], x["stop"] - x["start"])
        led.sent(1 + i % 2, x["id"], x["stop"], x["stop"] - x["start"])
    assert got == [(0, 400), (400, 800), (800, 1000)]
    # the file is closed and covered: the next file, from its entry 0
    assert led.take(1, 400, _view(n=1_000, final=True, nxt="F2"))["look"] == "F2"
    assert _lease(led.take(2, 400, _view("F2", 50)))["start"] == 0


def test_a_crashed_member_gives_back_what_was_sent_marked_and_the_rest_unmarked():
    led = _ledger(1, 2)
    x = _lease(led.take(1, 1000, _view()))
    led.counted(1, x["id"], 100, 100)  # 100 records passed in [0, 1000)
    led.sent(1, x["id"], 400, 40)  # first reply: 40 records, the next one at entry 400
    led.take(1, 1000, None, ack=True)  # asked again: those 40 are done; a new lease comes
    led.sent(1, x["id"], 700, 30)  # second reply: 30 records, up to entry 700, not acknowledged
    status = led.status(0.0)[0]
    assert status["in_flight"] == 30 and status["records_handed"] == 70
    led.gone(1, 1.0)
    back = [_lease(led.take(2, 1000, None)) for _ in range(3)]
    spans = [(b["start"], b["stop"], b["redelivered"], b["phase"]) for b in back]
    assert (400, 700, True, 0) in spans  # sent, not acknowledged: again, marked
    assert (700, 1000, False, 0) in spans  # never sent: again, unmarked
    assert (1000, 2000, False, 0) in spans  # the lease it had taken and not touched: as it was
    assert led.status(1.0)[0]["records_redelivered"] == 30


def test_restore_drop_loses_only_what_was_sent():
    led = _ledger(1, 2, restore="drop")
    x = _lease(led.take(1, 1000, _view()))
    led.counted(1, x["id"], 10, 10)
    led.sent(1, x["id"], 600, 6)
    led.gone(1, 1.0)
    back = _lease(led.take(2, 1000, None))
    assert (back["start"], back["stop"], back["redelivered"]) == (600, 1000, False)
    assert led.status(1.0)[0]["records_dropped"] == 6


def test_prescale_phase_is_exact_across_leases_and_waits_for_each_count():
    led = _ledger(1, 2, key=dict(KEY, prescale=3))
    x = _lease(led.take(1, 100, _view()))
    assert x["phase"] == 0
    assert "lease" not in led.take(2, 100, None)  # the next phase is not known before x is counted
    led.counted(1, x["id"], 7, 3)  # 7 passed the cut: records 0, 3, 6 kept
    y = _lease(led.take(2, 100, None))
    assert (y["start"], y["phase"]) == (100, 7 % 3)
    # a lease given back before it was cut keeps blocking until its new holder counts it
    led.gone(2, 2.0)
    again = _lease(led.take(1, 100, None))
    assert (again["start"], again["phase"]) == (100, 1)
    assert "lease" not in led.take(1, 100, None, ack=False)
    led.counted(1, again["id"], 5, 2)
    assert _lease(led.take(1, 100, None))["phase"] == (1 + 5) % 3


def test_release_gives_back_the_unused_rest_first_in_line():
    led = _ledger(1, 2)
    x = _lease(led.take(1, 1000, _view()))
    led.counted(1, x["id"], 50, 50)
    led.sent(1, x["id"], 1000, 50)
    led.release(1, x["id"], 800, 0, 10, 10)  # the client handed out only the records before entry 800
    r = _lease(led.take(2, 1000, None))
    assert (r["start"], r["stop"], r["redelivered"]) == (800, 1000, False)
    assert led.status(0.0)[0]["records_handed"] == 40
    led.gone(1, 1.0)  # what it kept, sent and not acknowledged, comes again marked
    again = _lease(led.take(2, 1000, None))
    assert (again["start"], again["stop"], again["redelivered"]) == (0, 800, True)


def test_leases_end_at_reported_basket_edges():
    led = _ledger(1)
    a = _lease(led.take(1, 400, _view(edges={"S": [1000, 2000, 3000]})))
    assert (a["start"], a["stop"]) == (0, 400)  # no edge between 200 and 800: as asked
    b = _lease(led.take(1, 700, _view(edges={"S": [1000, 2000, 3000]})))
    assert (b["start"], b["stop"]) == (400, 1000)  # 1000 is within 1.5x: the basket ends the lease
    c = _lease(led.take(1, 900, None))
    assert (c["start"], c["stop"]) == (1000, 2000)


def test_roundrobin_cuts_in_turn_and_skips_a_member_that_falls_behind():
    led = _ledger(1, 2, distribution="roundrobin")
    view = _view(n=100_000)
    a1 = _lease(led.take(1, 100, view))
    b1 = _lease(led.take(2, 100, None))
    assert (a1["start"], b1["start"]) == (0, 100)
    starts = [_lease(led.take(1, 100, None))["start"] for _ in range(RR_QUEUE + 3)]
    # member 1 asking alone: its own turn, then each time one range is cut for member 2's turn (queued
    # for it) and the next for member 1 ... until member 2 holds RR_QUEUE: then it is skipped
    assert starts[: RR_QUEUE + 1] == [200 + 200 * i for i in range(RR_QUEUE + 1)]
    assert starts[RR_QUEUE + 1 :] == [starts[RR_QUEUE] + 100 * (i + 1) for i in range(2)]
    queued = [_lease(led.take(2, 100, None))["start"] for _ in range(RR_QUEUE)]
    assert queued == [300 + 200 * i for i in range(RR_QUEUE)]


def test_members_must_match_and_a_lingering_group_is_forgotten():
    led = _ledger(1)
    with pytest.raises(GroupError, match="selection"):
        led.join(2, "c2", "g", dict(KEY, selection="x > 1"), "balanced", "redeliver", "oldest", None, 0.0)
    led.leave(1, clean=True, now=10.0)
    assert led.status(10.0)[0]["lingering_for"] == 60
    led.expire(69.0)
    assert led.groups
    led.expire(70.0)
    assert not led.groups


def test_dump_and_load_carry_the_place_and_give_back_what_was_in_flight():
    led = _ledger(1, key=dict(KEY, prescale=2))
    x = _lease(led.take(1, 1000, _view()))
    led.counted(1, x["id"], 40, 20)
    led.sent(1, x["id"], 500, 10)
    y = _lease(led.take(1, 1000, None, ack=False))  # read ahead, never counted
    state = json.loads(json.dumps(led.dump()))
    again = Ledger(linger=60)
    assert again.load(state, 0.0) == 1
    again.join(7, "c7", "g", dict(KEY, prescale=2), "balanced", "redeliver", "current", None, 1.0)
    spans = []
    for _ in range(3):
        b = _lease(again.take(7, 1000, None))
        spans.append((b["start"], b["stop"], b["redelivered"], b["phase"]))
        again.counted(7, b["id"], 0, 0)
    assert spans[:2] == [(0, 500, True, 0), (500, 1000, False, 0)]
    assert spans[2] == (y["start"], y["stop"], False, 40 % 2)
    assert again.load({"groups": [{"name": "broken"}]}, 0.0) == 0


def test_groups_are_bounded_lingering_ones_go_first(monkeypatch):
    from dispatcher import groups

    monkeypatch.setattr(groups, "MAX_GROUPS", 2)
    led = Ledger(linger=60)
    led.join(1, "c1", "a", KEY, "balanced", "redeliver", "oldest", None, 0.0)
    led.join(2, "c2", "b", KEY, "balanced", "redeliver", "oldest", None, 0.0)
    with pytest.raises(GroupError, match="2 groups"):
        led.join(3, "c3", "c", KEY, "balanced", "redeliver", "oldest", None, 0.0)
    led.leave(1, clean=True, now=1.0)  # "a" lingers: it makes room
    led.join(3, "c3", "c", KEY, "balanced", "redeliver", "oldest", None, 2.0)
    assert sorted(led.groups) == ["b", "c"]
