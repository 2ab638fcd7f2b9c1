"""Admission control (gateway/http/admission.py) on a bare event loop: who gets in, who waits, who is shed, and how
the limit follows the loop (issue 21)."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from gateway.http.admission import PRIORITIES, Admission
from gateway.runtime import check
from gateway.settings import AdmissionSettings, load_settings

NORMAL, HIGH, LOW = PRIORITIES["normal"], PRIORITIES["high"], PRIORITIES["low"]


def controller(**overrides: float) -> Admission:
    values = {"min_limit": 1, "max_limit": 2, "max_queue_delay_ms": 1000, "shed_hold_ms": 0}
    values.update(overrides)
    admission = Admission(AdmissionSettings(**values))
    admission.drain_per_s = 3.0  # three requests finish per second: 1 s of queue holds three
    return admission


async def test_requests_under_the_limit_are_admitted_at_once_and_the_next_waits_its_turn():
    """Up to the limit nothing waits; then requests queue, and a finished request hands its slot to the first."""
    admission = controller()
    assert admission.enter("a", NORMAL) is None
    assert admission.enter("a", NORMAL) is None
    waiter = admission.enter("a", NORMAL)
    assert waiter is not None and not waiter.future.done()
    admission.leave()
    assert await admission.wait(waiter) is True
    assert admission.in_flight == 2 and admission.queued == 0


async def test_a_queue_that_would_take_longer_than_the_target_delay_sheds_the_newcomer_at_once():
    """A client's queue holds what drains within max_queue_delay (3 here); its next request is shed, not queued."""
    admission = controller()
    for _ in range(2):
        admission.enter("a", NORMAL)
    queued = [admission.enter("a", NORMAL) for _ in range(3)]
    shed = admission.enter("a", NORMAL)
    assert shed is not None and await admission.wait(shed) is False
    assert shed.reason == "queue_full"
    assert all(w is not None and not w.future.done() for w in queued)
    assert admission.snapshot()["shed"] == {"queue_full": 1}


async def test_a_second_client_is_served_in_turn_while_one_client_floods():
    """Round-robin between clients: the flooding client's newest waiter makes room, and the other client goes
    next instead of behind the whole flood."""
    admission = controller()
    admission.enter("flood", NORMAL)
    admission.enter("flood", NORMAL)
    flood = [admission.enter("flood", NORMAL) for _ in range(3)]
    other = admission.enter("other", NORMAL)
    assert other is not None and not other.future.done()
    assert flood[-1] is not None and await admission.wait(flood[-1]) is False  # displaced, not the other client
    assert flood[-1].reason == "displaced"
    admission.leave()
    admission.leave()
    assert await admission.wait(flood[0]) is True
    assert await admission.wait(other) is True  # second slot: the other client, before flood[1]
    assert flood[1] is not None and not flood[1].future.done()


async def test_higher_priorities_go_first_and_displace_lower_ones_when_the_queue_is_full():
    """A high-priority request is admitted before queued normal ones, and takes a low one's place when full."""
    admission = controller()
    admission.enter("a", NORMAL)
    admission.enter("a", NORMAL)
    low = admission.enter("b", LOW)
    normal = [admission.enter("a", NORMAL) for _ in range(2)]
    high = admission.enter("c", HIGH)
    assert low is not None and await admission.wait(low) is False and low.reason == "displaced"
    admission.leave()
    assert high is not None and await admission.wait(high) is True
    assert all(w is not None and not w.future.done() for w in normal)


async def test_a_queued_request_is_shed_when_it_has_waited_twice_the_target_delay():
    """Nobody waits long: a request still queued at 2 x max_queue_delay gets its 503."""
    admission = controller(max_queue_delay_ms=20)
    admission.drain_per_s = 1000.0
    admission.enter("a", NORMAL)
    admission.enter("a", NORMAL)
    waiter = admission.enter("a", NORMAL)
    assert waiter is not None
    started = asyncio.get_running_loop().time()
    assert await admission.wait(waiter) is False
    assert waiter.reason == "queue_timeout"
    assert asyncio.get_running_loop().time() - started >= 0.039
    assert admission.queued == 0


async def test_a_shed_answer_is_held_for_shed_hold_ms_after_the_request_came_in():
    """A refused client that retries at once still cannot come back faster than shed_hold_ms."""
    admission = controller(shed_hold_ms=30, max_limit=1, max_queue_delay_ms=100)
    admission.drain_per_s = 1.0  # a second waiting request would wait a second: more than 0.1 s
    admission.enter("a", NORMAL)
    assert admission.enter("a", NORMAL) is not None  # a client's first waiting request always gets a place
    loop = asyncio.get_running_loop()
    started = loop.time()
    shed = admission.enter("a", NORMAL)
    assert shed is not None and await admission.wait(shed) is False
    assert loop.time() - started >= 0.029


def test_the_limit_shrinks_when_the_loop_is_late_and_recovers_when_it_keeps_up():
    """No limit while the loop keeps up; when it is late, a fraction of what was running (never below min_limit);
    then additive increase back to max_limit once it keeps up again."""
    admission = Admission(AdmissionSettings(min_limit=10, max_limit=100, target_loop_delay_ms=10))
    assert admission.limit == 100
    admission.peak_in_flight = 50
    admission.adapt(0.050, now=0.0)
    assert admission.limit == 40  # 0.8 x the 50 that were running, not 0.8 x the limit
    for i in range(20):
        admission.peak_in_flight = 40
        admission.adapt(0.050, now=1.0 + i)
    assert admission.limit == 10
    admission.adapt(0.001, now=30.0)
    assert admission.limit == 11  # one step at a time
    for i in range(40):
        admission.adapt(0.001, now=31.0 + i)
    assert admission.limit == 100


async def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_holder_passes_its_slot_on():
    """Shutdown cancels waiting requests: none of them may keep a slot or a place in the queue."""
    admission = controller()
    admission.enter("a", NORMAL)
    admission.enter("a", NORMAL)
    waiter = admission.enter("a", NORMAL)
    assert waiter is not None
    task = asyncio.create_task(admission.wait(waiter))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert admission.queued == 0 and admission.in_flight == 2


def test_priorities_come_from_the_contract_root_and_operation_and_a_wrong_one_is_a_located_problem(tmp_path):
    """`x-gateway.priority` at the API root is the default of its operations; an operation's own wins; a value that is
    not a priority stops the check at its pointer."""
    def contract(root: str, op: str) -> dict:
        get = {"responses": {"200": {"description": "ok"}}}
        return {"openapi": "3.1.0", "info": {"title": "p", "version": "1.0.0"},
                "x-gateway": {"api": "p", "route": "upstream.forward", "priority": root},
                "paths": {"/captures": {"post": {**get, "operationId": "capture", "x-gateway": {"priority": op}}},
                          "/reports": {"get": {**get, "operationId": "listReports"}}}}

    def compiled(root: str, op: str) -> tuple[dict[str, int], list]:
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(contract(root, op)))
        (tmp_path / "gateway.yaml").write_text(yaml.safe_dump({
            "contracts": [str(tmp_path / "p.yaml")], "auth": {"builtin": {"enabled": False}},
            "vendors": {"upstream": {"adapter": "http", "base_url": "http://u.test"}}}))
        _, operations, problems = check(load_settings(tmp_path / "gateway.yaml"))
        return {o.operation_id: o.priority for o in operations}, problems

    priorities, problems = compiled("low", "critical")
    assert not problems
    assert priorities == {"capture": PRIORITIES["critical"], "listReports": LOW}
    _, problems = compiled("low", "urgent")
    assert problems and any("priority" in str(p) and "/paths/~1captures/post/x-gateway" in str(p) for p in problems), \
        problems
