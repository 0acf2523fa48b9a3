"""The dynamic batching policy (``serve.batching``): a real ONNX Runtime session, real threads.

Every assertion is on counts (batches by how they were made, rows per batch) and on outputs,
never on time: "busy" is made certain with ``Executor.paused`` (the runner held as a run in
progress would be) and "on its way" with a thread parked inside ``Executor.expect``. Where
the adaptive policy decides from measured figures, the test records the figures first and
asserts the choice that follows from them. The REST + gRPC batch is in tests/test_serve_grpc.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from builders import mlp_classifier, save

from onnxdeploy.serve.batching import CostModel, Executor
from onnxdeploy.serve.metrics import Metrics
from onnxdeploy.serve.model import SessionHolder, read_model_info

LONG_MS = 60_000  # a hold bound no test may reach: a wrong hold would show in the counts


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return save(mlp_classifier(), tmp_path_factory.mktemp("batching") / "mlp.onnx")


def _executor(path, **kw) -> Executor:
    holder = SessionHolder(read_model_info(path), ort_threads=1)
    holder.load()
    return Executor(holder, Metrics(batching=True), **{"max_batch_size": 64, **kw})


def _ref(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _until(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _sizes(executor) -> dict[str, float]:
    return {s.name: s.value for s in executor.metrics.batch_size.collect()[0].samples}


def _request(executor, x, results, i, *, park: threading.Event | None = None,
             parked: threading.Event | None = None):
    """One request as the request path makes it: inside ``expect``, then ``infer``."""
    with executor.expect() as ticket:
        if park is not None:  # parsed slowly: on its way, not arrived yet
            parked.set()
            park.wait(30)
        results[i] = executor.infer({"x": x}, x.shape[0], ticket=ticket)


def _measured(executor, *, fixed_s: float, lead_s: float) -> None:
    """Recorded figures the adaptive choice follows: a run's fixed cost and the lead."""
    executor.costs = CostModel()
    executor.costs.add(1, fixed_s + 1e-5)
    executor.costs.add(8, fixed_s + 8e-5)
    executor.lead_s = lead_s
    executor.gap_s = lead_s


def test_cost_model_finds_the_fixed_cost_of_a_run():
    costs = CostModel()
    assert costs.fixed is None  # nothing measured: no claim
    for rows in (1, 1, 4, 8, 16, 2):
        costs.add(rows, 0.003 + 0.0005 * rows)
    assert costs.fixed == pytest.approx(0.003, rel=1e-6)
    same = CostModel()
    for _ in range(5):
        same.add(1, 0.002)
    assert same.fixed is None  # one size only: the intercept is unknown


def test_a_lone_request_runs_at_once_even_when_waiting_would_pay(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.010, lead_s=0.0001)  # waiting would pay, were anyone coming
    x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    results = [None]
    _request(executor, x, results, 0)
    assert dict(executor.counts) == {"alone": 1}
    np.testing.assert_allclose(results[0][0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    # outside the request path (nothing counted in flight) likewise
    assert executor.infer({"x": x}, 2)[0].shape == (2, 10)
    assert dict(executor.counts) == {"alone": 2}
    assert _sizes(executor)["onnxdeploy_batch_size_count"] == 2


def test_a_lone_request_skips_the_queue_and_is_counted_as_any_batch(mlp):
    # a request that finds the runner idle, nothing queued and nothing else in flight runs at
    # once in its thread without a queue entry (the bookkeeping batching costs at c=1), and its
    # batch is counted as every batch is: how, protocols, rows, queue time
    from onnxdeploy.serve.batching import protocol

    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.010, lead_s=0.0001)  # waiting would pay, were anyone coming

    def no_entry(*args):
        raise AssertionError("a lone request made a queue entry")

    executor._item = no_entry
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((1 + i, 64)).astype(np.float32) for i in range(3)]
    results: list = [None] * 3
    _request(executor, xs[0], results, 0)
    with protocol("grpc"):
        _request(executor, xs[1], results, 1)
    results[2] = executor.infer({"x": xs[2]}, 3)  # outside the request path (no ticket)
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    assert dict(executor.counts) == {"alone": 3}
    assert _sizes(executor)["onnxdeploy_batch_size_count"] == 3
    assert _sizes(executor)["onnxdeploy_batch_size_sum"] == 6
    queue = {s.name: s.value for s in executor.metrics.queue_seconds.collect()[0].samples}
    assert queue["onnxdeploy_batch_queue_seconds_count"] == 3
    assert queue["onnxdeploy_batch_queue_seconds_sum"] == 0  # never queued
    mixes = {s.labels["protocols"]: s.value for s in
             executor.metrics.batch_protocols.collect()[0].samples if s.name.endswith("_total")}
    assert mixes == {"http": 2, "grpc": 1}
    assert executor.costs.n > 2.5  # its runs feed the cost model the hold decides from
    assert executor.in_flight() == (0, 0) and executor.idle()


def test_a_request_arriving_during_a_lone_run_queues_and_runs_next(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.0001, lead_s=0.010)  # never held: counts are certain
    started, release = threading.Event(), threading.Event()
    run = executor.holder.run

    def slow_first(feeds):
        if not started.is_set():
            started.set()
            release.wait(30)
        return run(feeds)

    executor.holder.run = slow_first
    xs = [np.full((1, 64), i, np.float32) for i in range(2)]
    results: list = [None, None]
    first = threading.Thread(target=_request, args=(executor, xs[0], results, 0))
    first.start()
    assert started.wait(30)  # the lone run in progress
    second = threading.Thread(target=_request, args=(executor, xs[1], results, 1))
    second.start()
    _until(lambda: executor.waiting() == 1, "the second request queued")
    release.set()
    first.join(30)
    second.join(30)
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    assert dict(executor.counts) == {"alone": 2}
    assert executor.in_flight() == (0, 0) and executor.idle()


def test_run_lone_runs_only_what_would_run_at_once_and_alone(mlp):
    # the front's event loop must never wait for a batch: run_lone runs a request in the
    # caller's thread only when it would run at once, else does nothing (None)
    executor = _executor(mlp, timeout_ms=LONG_MS)
    x = np.ones((1, 64), np.float32)
    with executor.expect() as ticket:
        with executor.paused():  # a run in progress
            assert executor.run_lone({"x": x}, 1, ticket=ticket) is None
            assert executor.in_flight() == (1, 1)  # untouched: still on its way
        out = executor.run_lone({"x": x}, 1, ticket=ticket)
        assert executor.in_flight() == (1, 0)
    np.testing.assert_allclose(out[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    assert dict(executor.counts) == {"alone": 1}
    with executor.expect():  # another request on its way: its batch might wait for it
        with executor.expect() as ticket:
            assert executor.run_lone({"x": x}, 1, ticket=ticket) is None
    big = np.zeros((64, 64), np.float32)  # max_batch_size rows: never merged, never counted
    with executor.paused():
        assert executor.run_lone({"x": big}, 64) is None  # its turn after the run
    assert executor.run_lone({"x": big}, 64)[0].shape == (64, 10)
    assert dict(executor.counts) == {"alone": 1} and executor.in_flight() == (0, 0)
    always = _executor(mlp, timeout_ms=LONG_MS, hold="always")  # a lone batch waits there
    assert always.run_lone({"x": x}, 1) is None and not always.counts


def test_requests_waiting_for_a_busy_runner_are_gathered_into_one_run(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(10)]
    results: list = [None] * len(xs)
    threads = [threading.Thread(target=_request, args=(executor, x, results, i))
               for i, x in enumerate(xs)]
    with executor.paused():  # a run in progress: every request queues
        for t in threads:
            t.start()
        _until(lambda: executor.waiting() == len(xs), "ten queued requests")
    for t in threads:
        t.join(30)
    assert dict(executor.counts) == {"gathered": 1}  # one run took all ten
    sizes = _sizes(executor)
    assert sizes["onnxdeploy_batch_size_count"] == 1
    assert sizes["onnxdeploy_batch_size_sum"] == sum(len(x) for x in xs)
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)


def test_more_than_max_batch_size_rows_make_several_runs(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS, max_batch_size=8)
    xs = [np.full((3, 64), i, np.float32) for i in range(6)]  # 18 rows: 3 + 3, 3 + 3, 3 + 3
    results: list = [None] * len(xs)
    threads = [threading.Thread(target=_request, args=(executor, x, results, i))
               for i, x in enumerate(xs)]
    with executor.paused():
        for t in threads:
            t.start()
        _until(lambda: executor.waiting() == len(xs), "six queued requests")
    for t in threads:
        t.join(30)
    assert _sizes(executor)["onnxdeploy_batch_size_count"] == 3
    assert _sizes(executor)["onnxdeploy_batch_size_sum"] == 18
    assert executor.counts["gathered"] == 3 and executor.counts["held"] == 0


def _lead_and_follower(executor, mlp):
    """A request parked inside the request path (on its way), then one that finds the runner
    idle; returns (results, the parked thread's release, the threads)."""
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(2)]
    results: list = [None, None]
    park, parked = threading.Event(), threading.Event()
    follower = threading.Thread(target=_request, args=(executor, xs[1], results, 1),
                                kwargs={"park": park, "parked": parked})
    follower.start()
    parked.wait(30)
    leader = threading.Thread(target=_request, args=(executor, xs[0], results, 0))
    leader.start()
    return xs, results, park, leader, follower


def test_a_batch_is_held_for_a_request_on_its_way_when_that_pays(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.010, lead_s=0.0001)  # the lead is far below a run's cost
    xs, results, park, leader, follower = _lead_and_follower(executor, mlp)
    _until(lambda: executor.counts["held"] == 1, "the leader holding")  # counted as it holds
    assert results[0] is None  # held, not run
    park.set()  # the follower reaches the executor: the held batch takes it and runs
    leader.join(30)
    follower.join(30)
    assert dict(executor.counts) == {"held": 1}
    assert _sizes(executor)["onnxdeploy_batch_size_sum"] == 2
    assert _sizes(executor)["onnxdeploy_batch_size_count"] == 1
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)


def test_a_batch_is_not_held_when_the_wait_would_cost_more_than_a_run(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.0001, lead_s=0.010)  # the lead is longer than a run
    xs, results, park, leader, follower = _lead_and_follower(executor, mlp)
    leader.join(30)
    assert not leader.is_alive() and results[0] is not None  # ran without its follower
    park.set()
    follower.join(30)
    assert dict(executor.counts) == {"alone": 2}


def test_hold_always_holds_a_lone_request_until_the_timeout(mlp):
    executor = _executor(mlp, timeout_ms=50, hold="always")
    x = np.zeros((1, 64), np.float32)
    results = [None]
    _request(executor, x, results, 0)
    assert dict(executor.counts) == {"held": 1}
    with pytest.raises(ValueError, match="expected one of adaptive, always"):
        _executor(mlp, hold="sometimes")


def test_a_failed_run_wakes_every_caller_and_the_runner_goes_on(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    good = np.zeros((1, 64), np.float32)
    bad = np.zeros((1, 64), np.float64)  # the session refuses float64: the batch fails
    results: list = [None] * 4
    errors: list = [None] * 4

    def call(i, x):
        try:
            results[i] = executor.infer({"x": x}, 1)
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            errors[i] = exc

    threads = [threading.Thread(target=call, args=(i, bad if i < 2 else good)) for i in range(4)]
    with executor.paused():
        for t in threads:
            t.start()
        _until(lambda: executor.waiting() == 4, "four queued requests")
    for t in threads:
        t.join(30)
    assert errors[0] is not None and errors[1] is not None  # the float64 pair shared a run
    assert errors[2] is None and errors[3] is None and results[2][0].shape == (1, 10)
    assert executor.waiting() == 0
    assert executor.infer({"x": good}, 1)[0].shape == (1, 10)  # the runner is free again


def test_requests_that_never_reach_the_executor_are_not_waited_for(mlp):
    executor = _executor(mlp, timeout_ms=LONG_MS)
    with executor.expect():
        assert executor.in_flight() == (1, 1)  # in flight, on its way
    assert executor.in_flight() == (0, 0)  # refused before infer: forgotten
    with pytest.raises(RuntimeError):
        with executor.expect():
            raise RuntimeError("a view that failed")
    assert executor.in_flight() == (0, 0)
    x = np.zeros((1, 64), np.float32)
    with executor.expect() as ticket:
        executor.infer({"x": x}, 1, ticket=ticket)
        assert executor.in_flight() == (1, 0)  # arrived, answer being made
    assert executor.in_flight() == (0, 0)
    big = np.zeros((64, 64), np.float32)  # max_batch_size rows: runs by itself, still counted
    with executor.expect() as ticket:
        executor.infer({"x": big}, 64, ticket=ticket)
        assert executor.in_flight() == (1, 0)
    assert executor.in_flight() == (0, 0)
    off = _executor(mlp, max_batch_size=0)
    with off.expect():
        assert off.in_flight() == (0, 0)  # batching off: nothing counted, nothing to wait for


def test_idle_means_a_request_made_now_would_run_at_once_and_alone(mlp):
    # the front runs a lone request inline in its event loop only while this holds
    executor = _executor(mlp, timeout_ms=LONG_MS)
    assert executor.idle()
    with executor.paused():  # a run in progress
        assert not executor.idle()
    assert executor.idle()
    with executor.expect():  # a request on its way to the executor
        assert not executor.idle()
    assert executor.idle()


@pytest.mark.parametrize("hold, inline", [("adaptive", True), ("always", False)])
def test_the_front_runs_lone_requests_inline_with_adaptive_batching_only(mlp, hold, inline):
    # adaptive: a lone request never waits, so it may run in the loop's thread (batching on
    # then costs a quick model no thread hop at low concurrency); always: it waits for the
    # timeout, which must never hold the loop
    import asyncio

    from onnxdeploy.serve.front import Front

    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1, "MAX_BATCH_SIZE": 8,
                   "BATCH_HOLD": hold})
    try:
        front.__rsgi_init__(loop)
        assert front.inline_allowed is inline
        assert front.executor is front.service.executor
    finally:
        front.__rsgi_del__(loop)
        loop.close()


# ----------------------------------------------------------------------- the event loop's callers


def _loop_requests(executor, loop, xs):
    """Requests as the front makes them: a ticket (``expect``), then ``infer_async``."""
    async def one(x):
        with executor.expect() as ticket:
            return await executor.infer_async({"x": x}, x.shape[0], loop, ticket=ticket)
    return [loop.create_task(one(x)) for x in xs]


def test_loop_and_thread_requests_waiting_for_a_busy_runner_share_one_run(mlp):
    # the front's requests (futures in its event loop, run by the runner thread) and a thread's
    # (gRPC's) queue behind a run in progress and are gathered into one run, each given its rows
    import asyncio

    executor = _executor(mlp, timeout_ms=LONG_MS)
    loop = asyncio.new_event_loop()
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((1 + i % 3, 64)).astype(np.float32) for i in range(8)]
    results: list = [None] * 3
    try:
        with executor.paused():
            tasks = _loop_requests(executor, loop, xs)
            loop.run_until_complete(asyncio.sleep(0))  # each task submits, then waits
            threads = [threading.Thread(target=_request, args=(executor, xs[i], results, i))
                       for i in range(3)]
            for t in threads:
                t.start()
            _until(lambda: executor.waiting() == len(xs) + 3, "eleven queued requests")
            assert not any(t.done() for t in tasks)
        got = loop.run_until_complete(asyncio.gather(*tasks))
        for t in threads:
            t.join(30)
    finally:
        executor.close()
        loop.close()
    assert dict(executor.counts) == {"gathered": 1}
    sizes = _sizes(executor)
    assert sizes["onnxdeploy_batch_size_count"] == 1
    assert sizes["onnxdeploy_batch_size_sum"] == sum(len(x) for x in xs) + sum(len(x) for x in xs[:3])
    for x, out in zip(xs, got):
        np.testing.assert_allclose(out[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    for x, out in zip(xs, results):
        np.testing.assert_allclose(out[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)
    assert executor.in_flight() == (0, 0) and executor.idle()
    assert executor._thread is None  # closed: the runner thread ended


def test_a_lone_loop_request_is_run_by_the_runner_thread_at_once(mlp):
    import asyncio

    executor = _executor(mlp, timeout_ms=LONG_MS)
    _measured(executor, fixed_s=0.010, lead_s=0.0001)  # waiting would pay, were anyone coming
    loop = asyncio.new_event_loop()
    x = np.ones((2, 64), np.float32)
    try:
        (out,) = loop.run_until_complete(asyncio.gather(*_loop_requests(executor, loop, [x])))
        runner = executor._thread
    finally:
        executor.close()
        loop.close()
    assert runner is not None and runner is not threading.current_thread()
    assert dict(executor.counts) == {"alone": 1}
    np.testing.assert_allclose(out[0], _ref(mlp, x), rtol=1e-5, atol=1e-6)


def test_a_failed_run_fails_every_loop_request_of_its_batch_and_the_runner_goes_on(mlp):
    import asyncio

    executor = _executor(mlp, timeout_ms=LONG_MS)
    loop = asyncio.new_event_loop()
    good = np.zeros((1, 64), np.float32)
    bad = np.zeros((1, 64), np.float64)  # the session refuses float64: the batch fails
    try:
        with executor.paused():
            tasks = _loop_requests(executor, loop, [bad, bad, good])
            loop.run_until_complete(asyncio.sleep(0))
            assert executor.waiting() == 3
        got = loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        (after,) = loop.run_until_complete(asyncio.gather(*_loop_requests(executor, loop, [good])))
    finally:
        executor.close()
        loop.close()
    assert isinstance(got[0], Exception) and isinstance(got[1], Exception)
    assert got[2][0].shape == (1, 10) and after[0].shape == (1, 10)
    assert executor.in_flight() == (0, 0) and executor.waiting() == 0


def test_close_answers_what_was_handed_to_the_runner_first(mlp):
    import asyncio

    executor = _executor(mlp, timeout_ms=LONG_MS)
    loop = asyncio.new_event_loop()
    x = np.ones((1, 64), np.float32)
    try:
        with executor.paused():
            tasks = _loop_requests(executor, loop, [x, x])
            loop.run_until_complete(asyncio.sleep(0))
            closer = threading.Thread(target=executor.close)
            closer.start()  # waits for the run in progress and what queued behind it
            assert closer.is_alive()
        closer.join(30)
        assert not closer.is_alive()
        got = loop.run_until_complete(asyncio.gather(*tasks))
    finally:
        loop.close()
    assert [g[0].shape for g in got] == [(1, 10), (1, 10)]
    assert _sizes(executor)["onnxdeploy_batch_size_sum"] == 2


def test_the_front_parses_in_its_loop_unless_parsing_is_slow(mlp):
    # batching on a model with a batch axis: requests are parsed in the loop; a request whose
    # work outside its run takes long sends the next ones to the work lane's threads, until
    # that work is quick again (hysteresis)
    import asyncio

    from onnxdeploy.serve.front import PARSE_ABOVE_S, PARSE_BELOW_S, Front

    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1, "MAX_BATCH_SIZE": 8})
    off = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1})
    try:
        front.__rsgi_init__(loop)
        off.__rsgi_init__(loop)
        assert front.in_loop and not off.in_loop_allowed and not off.in_loop
        front._parsed(PARSE_ABOVE_S * 10)  # one slow request (the first one's imports) alone
        assert front.in_loop
        for _ in range(200):
            front._parsed(PARSE_ABOVE_S * 2)
        assert not front.in_loop
        for _ in range(200):
            front._parsed((PARSE_ABOVE_S + PARSE_BELOW_S) / 2)  # between the bounds: stays
        assert not front.in_loop
        for _ in range(200):
            front._parsed(PARSE_BELOW_S / 10)
        assert front.in_loop
    finally:
        front.__rsgi_del__(loop)
        off.__rsgi_del__(loop)
        loop.close()


def test_the_front_runs_a_lone_request_in_its_loop_and_hands_it_over_when_not_alone(mlp):
    # batching on: a request alone in the worker is answered whole in the loop's thread; one
    # that finds the runner taken by another thread's request is handed to the runner thread,
    # the loop never waiting for it
    import asyncio
    import json

    from onnxdeploy.serve.front import Front
    from onnxdeploy.serve.routes import Request

    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1, "MAX_BATCH_SIZE": 8})
    try:
        front.__rsgi_init__(loop)
        executor = front.executor
        ran_in: list[str] = []
        run = executor.holder.run

        def recorded(feeds):
            ran_in.append(threading.current_thread().name)
            return run(feeds)

        executor.holder.run = recorded
        front.inline = True  # a quick model: the inline path is on
        x = np.ones((1, 64), np.float32)
        body = json.dumps({"inputs": x.tolist()}).encode()
        match = front.router.match("POST", "/predict")

        def answer():
            request = Request("POST", "/predict", {"content-type": "application/json"}.get, body)
            return front._in_loop(front.service.answer_steps(match, request), "http")

        assert front.admission.enter()
        try:
            reply = loop.run_until_complete(answer())
            assert reply.status == 200 and ran_in == [threading.current_thread().name]
            executor.quiet = lambda: True  # the hint said alone; then a thread took the runner
            with executor.paused():
                task = loop.create_task(answer())
                loop.run_until_complete(asyncio.sleep(0))  # parsed, handed over: not waiting
                assert executor.waiting() == 1 and not task.done()
            reply2 = loop.run_until_complete(asyncio.wait_for(task, 30))
        finally:
            front.admission.leave()
        assert reply2.status == 200 and ran_in[1] == "serve-runner"
        for r in (reply, reply2):
            np.testing.assert_allclose(json.loads(r.body)["outputs"]["logits"], _ref(mlp, x),
                                       rtol=1e-5, atol=1e-6)
        assert dict(executor.counts) == {"alone": 2}
        assert executor.in_flight() == (0, 0)
    finally:
        front.__rsgi_del__(loop)
        loop.close()


def test_without_batching_quick_grpc_requests_run_in_the_loop_whatever_is_in_flight(mlp):
    # gRPC's RPCs are coroutines in the worker's loop: without batching, a quick model's
    # ModelInfer runs there even with other requests in flight (a hop to the work lane costs
    # it 10 thread switches more); REST in flight with others still goes to the work lane, and
    # a slow model (inline off) sends gRPC there too
    import asyncio
    import json

    from onnxdeploy.serve.front import Front
    from onnxdeploy.serve.routes import Request
    from onnxdeploy.serve.views import Run

    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1})
    try:
        front.__rsgi_init__(loop)
        assert front.executor is None  # batching off
        where: list[str] = []
        x = np.ones((1, 64), np.float32)

        def steps():
            where.append(threading.current_thread().name)
            outputs = yield Run({"x": x}, 1)
            return outputs[0]

        def rest_steps():
            request = Request("POST", "/predict", {"content-type": "application/json"}.get,
                              json.dumps({"inputs": x.tolist()}).encode())
            where.append(threading.current_thread().name)
            return (yield from front.service.answer_steps(front.router.match("POST", "/predict"),
                                                          request))

        me = threading.current_thread().name
        front.inline = True
        assert front.admission.enter() and front.admission.enter()  # two in flight
        try:
            logits = loop.run_until_complete(front.run_work(steps(), 100, "grpc"))
            np.testing.assert_allclose(logits, _ref(mlp, x), rtol=1e-5, atol=1e-6)
            assert where == [me]
            reply = loop.run_until_complete(front.run_work(rest_steps(), 100, "http"))
            assert reply.status == 200 and where[1].startswith("serve-work")
            front.inline = False  # a slow model: the loop must stay free
            loop.run_until_complete(front.run_work(steps(), 100, "grpc"))
            assert where[2].startswith("serve-work")
        finally:
            front.admission.leave()
            front.admission.leave()
    finally:
        front.__rsgi_del__(loop)
        loop.close()


def test_the_inline_figure_of_a_request_run_in_a_batch_is_a_lone_run(mlp):
    # the front runs a lone request inline while its average service time is short; a request
    # handed to the runner counts what its run would take alone, not the last batches' runs
    # (after a burst, those kept the inline path off at low concurrency for hundreds of
    # requests)
    import asyncio
    import json

    from onnxdeploy.serve.front import Front
    from onnxdeploy.serve.routes import Request

    executor = _executor(mlp, timeout_ms=LONG_MS, max_batch_size=8)
    xs = [np.ones((2, 64), np.float32) for _ in range(3)]
    with executor.paused():  # three requests merged into one run
        threads = [threading.Thread(target=executor.infer, args=({"x": x}, 2)) for x in xs]
        for t in threads:
            t.start()
        _until(lambda: executor.waiting() == 3, "three queued requests")
    for t in threads:
        t.join(30)
    assert executor.run_s is not None and executor.lone_s is None  # a batch is not a lone run
    executor.infer({"x": xs[0]}, 2)
    assert executor.lone_s is not None

    loop = asyncio.new_event_loop()
    front = Front({"MODEL_PATH": str(mlp), "ORT_THREADS": 1, "MAX_BATCH_SIZE": 8})
    try:
        front.__rsgi_init__(loop)
        front.executor.run_s, front.executor.lone_s = 60.0, 1e-4  # long batches, quick lone runs
        front.inline = False  # e.g. after a burst: requests go to the runner thread
        body = json.dumps({"inputs": xs[0].tolist()}).encode()
        request = Request("POST", "/predict", {"content-type": "application/json"}.get, body)
        reply = loop.run_until_complete(
            front._in_loop(front.service.answer_steps(front.router.match("POST", "/predict"), request), "http"))
        assert reply.status == 200
        assert front.service_s < 30  # its own parse and a lone run: not a minute-long batch
    finally:
        front.__rsgi_del__(loop)
        loop.close()


# ----------------------------------------------------------------------- a real server


def test_a_server_merges_more_requests_than_it_has_request_threads(tmp_path, mlp):
    # one worker with ONE request thread, every batch held until 4 rows (30 s bound): requests
    # are parsed in the worker's event loop and only their runs wait, so four requests sent
    # together make one run of 4 rows (a thread per waiting request would give 4 runs of 1,
    # each held for the whole bound: the client's timeout fails the test first)
    import json
    from concurrent.futures import ThreadPoolExecutor

    from prometheus_client.parser import text_string_to_metric_families
    from test_serve_server import Server

    from onnxdeploy.serve.front import LOOP_MAX_BODY_BYTES

    server = Server(mlp, "--workers", "1", "--http-threads", "1", "--max-batch-size", "4",
                    "--batch-hold", "always", "--batch-timeout-ms", "30000", tmp=tmp_path)
    try:
        rng = np.random.default_rng(5)
        xs = [rng.standard_normal((1, 64)).astype(np.float32) for _ in range(4)]
        with ThreadPoolExecutor(len(xs)) as pool:
            got = list(pool.map(lambda x: server.post_json("/predict", {"inputs": x.tolist()},
                                                           timeout=20), xs))
        for x, (status, _, body) in zip(xs, got):
            assert status == 200, body
            np.testing.assert_allclose(json.loads(body)["outputs"]["logits"], _ref(mlp, x),
                                       rtol=1e-5, atol=1e-6)
        # a bad request on the same path: its 400 is made in the loop, nothing is run
        status, _, body = server.post_json("/predict", {"inputs": [[1.0] * 3]}, timeout=20)
        assert status == 400 and "error" in json.loads(body)
        # a body over LOOP_MAX_BODY_BYTES is parsed in the (one) work-lane thread; its 4 rows
        # fill a batch of their own and run at once
        big_x = rng.standard_normal((4, 64)).astype(np.float32)
        big = json.dumps({"inputs": big_x.tolist()}).encode() + b" " * LOOP_MAX_BODY_BYTES
        status, _, body = server.request("POST", "/predict", big,
                                         {"Content-Type": "application/json"}, timeout=20)
        assert status == 200, body
        np.testing.assert_allclose(json.loads(body)["outputs"]["logits"], _ref(mlp, big_x),
                                   rtol=1e-5, atol=1e-6)
        text = server.get("/metrics")[2].decode()
    finally:
        server.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    assert samples[("onnxdeploy_batch_size_count", ())] == 1  # N rows run by themselves, uncounted
    assert samples[("onnxdeploy_batch_size_sum", ())] == 4
    hows = {dict(k[1])["how"]: v for k, v in samples.items() if k[0] == "onnxdeploy_batches_total"}
    assert sum(hows.values()) == 1, hows  # held for the rest, or all four already waiting
    assert samples[("onnxdeploy_batch_protocols_total", (("protocols", "http"),))] == 1
    key = "onnxdeploy_requests_total"
    assert samples[(key, (("endpoint", "predict"), ("protocol", "http"), ("status", "200")))] == 5
    assert samples[(key, (("endpoint", "predict"), ("protocol", "http"), ("status", "400")))] == 1
    assert samples[("onnxdeploy_inflight_requests", ())] == 0
