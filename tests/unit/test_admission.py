"""Admission control (gateway/http/admission.py) on a bare event loop: who gets in, who waits, who is shed, and how
the limit follows the loop (issue 21)."""

from __future__ import annotations

import asyncio
import time

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
    admission.leave(time.perf_counter())
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
    admission.leave(time.perf_counter())
    admission.leave(time.perf_counter())
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
    admission.leave(time.perf_counter())
    assert high is not None and await admission.wait(high) is True
    assert all(w is not None and not w.future.done() for w in normal)


async def test_a_queued_request_is_shed_when_it_has_waited_max_queue_wait_ms():
    """Nobody waits long: a request still queued after max_queue_wait_ms gets its 503."""
    admission = controller(max_queue_delay_ms=20, max_queue_wait_ms=40)
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


async def test_a_client_refused_again_before_its_retry_after_gets_its_refusal_after_shed_hold_ms():
    """A first refusal leaves at once; a client that comes back before its Retry-After is up (a retry storm) gets its
    next refusals shed_hold_ms after each request came in. Another client's first refusal is not held."""
    admission = controller(shed_hold_ms=30, max_limit=1, max_queue_delay_ms=100)
    admission.drain_per_s = 1.0  # a second waiting request would wait a second: more than 0.1 s
    admission.enter("a", NORMAL)
    assert admission.enter("a", NORMAL) is not None  # a client's first waiting request always gets a place
    loop = asyncio.get_running_loop()

    async def refused(client: str) -> float:
        started = loop.time()
        shed = admission.enter(client, NORMAL)
        assert shed is not None and await admission.wait(shed) is False
        return loop.time() - started

    assert await refused("a") < 0.01
    assert await refused("a") >= 0.029
    assert admission.enter("b", NORMAL) is not None  # b's first waiting request has its place
    assert await refused("b") < 0.01


def window(admission: Admission, *, done: int, latency_s: float, busy: float, now: float,
           loop_delay_s: float = 0.001) -> None:
    """One measurement window of 0.1 s in which `done` requests of `latency_s` each finished."""
    admission._window_started = now - 0.1
    admission.completed += done
    admission._latency_sum = done * latency_s
    admission.adapt(loop_delay_s, busy, now)


def test_on_a_full_cpu_the_limit_is_what_finishes_within_the_unloaded_latency_plus_the_target():
    """Little's law: 1,000 requests/s, 5 ms each unloaded, 10 ms of CPU wait allowed: 15 at once. While the CPU has
    room there is no limit; the limit grows back step by step once the CPU has room again."""
    admission = Admission(AdmissionSettings(min_limit=2, max_limit=100, target_cpu_delay_ms=10))
    window(admission, done=100, latency_s=0.005, busy=0.5, now=1.0)  # room: the unloaded latency is learnt
    assert admission.limit == 100 and admission.base_latency_s == pytest.approx(0.005)
    for i in range(5):  # full: 100 per window finish (1,000/s) however long each took
        window(admission, done=100, latency_s=0.080, busy=0.99, now=2.0 + i)
    assert admission.limit == pytest.approx(15)
    assert admission.base_latency_s == pytest.approx(0.005)  # a full CPU's latencies do not teach the baseline
    window(admission, done=100, latency_s=0.005, busy=0.3, now=10.0)
    assert admission.limit == pytest.approx(16.5)  # one step (increase_ratio) at a time
    for i in range(40):
        window(admission, done=100, latency_s=0.005, busy=0.3, now=11.0 + i)
    assert admission.limit == 100


def test_a_slow_vendor_does_not_lower_the_limit_and_raises_it_when_the_cpu_is_full():
    """Requests that wait 2 s on a vendor cost no CPU: with the CPU half idle the limit stays at max_limit, whatever
    the latency; on a full CPU the limit counts the vendor's 2 s in (500/s x 2.01 s), so none of them is shed."""
    admission = Admission(AdmissionSettings(min_limit=2, max_limit=5000, target_cpu_delay_ms=10))
    for i in range(5):
        window(admission, done=50, latency_s=2.0, busy=0.4, now=1.0 + i)
    assert admission.limit == 5000
    for i in range(5):
        window(admission, done=50, latency_s=2.5, busy=1.0, now=10.0 + i)
    assert admission.limit == pytest.approx(500 * 2.01, rel=0.01)


def test_a_late_loop_means_a_full_cpu_even_when_the_process_did_not_use_its_core():
    """Another process taking the core shows as a late loop, not as this process's CPU time."""
    admission = Admission(AdmissionSettings(min_limit=2, max_limit=100, target_loop_delay_ms=10))
    window(admission, done=100, latency_s=0.002, busy=0.5, now=1.0)
    window(admission, done=100, latency_s=0.040, busy=0.5, now=2.0, loop_delay_s=0.030)
    assert admission.limit < 100


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
