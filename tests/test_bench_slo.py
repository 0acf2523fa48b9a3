"""The capacity search, its rules and the verdict's words on known inputs (no servers)."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

from onnxdeploy.bench.engines.native import schedule
from onnxdeploy.bench.slo import (
    MAX_HALVINGS,
    Bound,
    CapacitySearch,
    SearchSettings,
    judge,
    min_queries,
    parse_slo,
)
from onnxdeploy.bench.stats import RunResult, aggregate
from onnxdeploy.bench.verdict import capacity_verdict, make_verdict
from onnxdeploy.errors import OptionError
from onnxdeploy.judge.words import speed_words


@pytest.mark.parametrize("text, key, ms", [
    ("p99=20ms", "p99", 20.0), ("p99=20", "p99", 20.0), ("P95 <= 7.5ms", "p95", 7.5),
    ("p99.9=0.05s", "p99.9", 50.0), ("p50<3", "p50", 3.0),
])
def test_parse_slo(text, key, ms):
    assert parse_slo([text]) == [Bound(key, ms)]


@pytest.mark.parametrize("bad, needle", [
    ("p98=10ms", "expected PERCENTILE=LATENCY"), ("p99=fast", "expected PERCENTILE=LATENCY"),
    ("p99=0", "must be > 0"), ("20ms", "expected PERCENTILE=LATENCY"),
])
def test_parse_slo_rejects(bad, needle):
    with pytest.raises(OptionError, match=needle):
        parse_slo([bad])


def test_several_bounds_sorted_and_conflicts_refused():
    assert [b.key for b in parse_slo(["p99=20", "p50=5"])] == ["p50", "p99"]
    with pytest.raises(OptionError, match="p99 twice"):
        parse_slo(["p99=20", "p99=30"])


def test_queries_a_percentile_needs():
    assert min_queries([Bound("p99", 10)]) == 2000
    assert min_queries([Bound("p99.9", 10)]) == 20000
    assert min_queries([Bound("p50", 1), Bound("p90", 5)]) == 200
    s = SearchSettings([Bound("p99", 10)], min_duration_s=2.0, max_run_s=30.0)
    assert s.queries(100) == 2000 and s.queries(5000) == 10000  # the count, then the duration
    assert s.queries(10) == 300  # capped by the longest run; judged not valid (too few queries)
    rule = s.stop_rule(2000)
    assert rule.bounds == ((10000, 20),) and rule.max_errors == 20


def _run(rate, *, p99, errors=0, n=2000, early=None, slip=0.0, first_error=None):
    lat = {"p50": p99 / 3, "p90": p99 / 2, "p95": p99 / 1.5, "p99": p99, "p99.9": p99 * 1.2, "max": p99 * 2}
    return RunResult("t", 8, requests=n, errors={"http_503": errors} if errors else {},
                     elapsed_s=n / rate, latency_ms=lat, mode="open", rate=rate, early_stop=early,
                     scheduled=n + errors, late_sends=0, send_slip_s=slip, first_error=first_error)


def _simulate(search: CapacitySearch, capacity: float, flaky_at: set[float] = frozenset()) -> int:
    """Drive a search against a server that meets p99 <= 10 ms up to ``capacity`` req/s."""
    steps = 0
    flaked: set[float] = set()
    while (rate := search.next_rate()) is not None:
        steps += 1
        assert steps < 60, "the search does not terminate"
        over = rate > capacity or (rate in flaky_at and rate not in flaked and search.lo == rate)
        if rate in flaky_at and search.lo == rate:
            flaked.add(rate)
        planned = search.settings.queries(rate)
        run = _run(rate, p99=25.0 if over else 5.0, n=planned)
        search.record(judge(run, search.settings, planned))
    return steps


@pytest.mark.parametrize("capacity, start", [(365.0, 50.0), (840.0, 1000.0), (1234.0, 20.0)])
def test_search_brackets_bisects_and_confirms(capacity, start):
    settings = SearchSettings([Bound("p99", 10)], precision=0.1)
    search = CapacitySearch("t", settings, start)
    _simulate(search, capacity)
    res = search.result()
    assert capacity / 1.1 <= res["rps"] <= capacity  # within the stated precision, never above
    assert res["upper_rps"] > capacity and (res["upper_rps"] - res["rps"]) / res["rps"] <= 0.1 + 1e-9
    assert res["confirmations"] == 3 and res["valid"] and not res["lower_bound"]
    assert res["limited_by"] == "p99" and res["latency_ms"]["p99"] == 5.0
    assert sum(r["passed"] and r["rate"] == res["rps"] for r in res["runs"]) == 3


def test_a_failed_confirmation_moves_the_capacity_down():
    settings = SearchSettings([Bound("p99", 10)], precision=0.1)
    search = CapacitySearch("t", settings, 100.0)
    # the first confirmation at the best rate fails once (noise): that rate cannot be the capacity
    first = CapacitySearch("t", settings, 100.0)
    _simulate(first, 365.0)
    best = first.result()["rps"]
    _simulate(search, 365.0, flaky_at={best})
    res = search.result()
    assert res["rps"] < best and res["confirmations"] == 3
    assert all(r["passed"] for r in res["runs"] if r["rate"] == res["rps"])


def test_no_rate_meets_the_bound():
    settings = SearchSettings([Bound("p99", 10)])
    search = CapacitySearch("t", settings, 80.0)
    steps = _simulate(search, 0.0)
    res = search.result()
    assert steps == MAX_HALVINGS + 1 and res["rps"] is None and not res["valid"]
    assert res["limited_by"] == "p99" and "even 10 req/s missed" in res["note"]


def test_generator_limit_gives_a_lower_bound():
    settings = SearchSettings([Bound("p99", 10)])
    search = CapacitySearch("t", settings, 100.0, generator_limit=700.0)
    _simulate(search, 1e9)
    res = search.result()
    assert res["rps"] == 700.0 and res["lower_bound"] and not res["valid"]
    assert res["limited_by"] == "generator" and res["confirmations"] == 3


def test_judge_rules():
    s = SearchSettings([Bound("p50", 2), Bound("p99", 10)])
    assert judge(_run(100, p99=5), s, 2000).passed
    both = judge(_run(100, p99=12), s, 2000)  # p50 4 ms and p99 12 ms: both missed, both named
    assert not both.passed and both.limited_by == "p50" and "p50 4.00 ms > 2 ms, p99 12.00 ms > 10 ms" in both.reason
    p99 = judge(_run(100, p99=12), SearchSettings([Bound("p50", 5), Bound("p99", 10)]), 2000)
    assert not p99.passed and p99.limited_by == "p99"
    p50 = judge(_run(100, p99=9), s, 2000)  # p50 = 3 ms > 2 ms: bounds hold jointly
    assert not p50.passed and p50.limited_by == "p50"
    err = judge(_run(100, p99=5, errors=30, first_error="HTTP 503: busy"), s, 2030)
    assert not err.passed and err.limited_by == "errors" and "HTTP 503: busy" in err.reason
    ok_err = judge(_run(100, p99=5, errors=10), s, 2010)  # 0.5% errors: allowed
    assert ok_err.passed
    early = judge(_run(100, p99=5, n=40, early="more than 20 requests over 10 ms"), s, 2000)
    assert not early.passed and early.limited_by == "p99" and early.valid
    short = judge(_run(100, p99=5, n=500), s, 500)
    assert short.passed and not short.valid and "500 queries < 2000" in short.reason
    slow_gen = judge(_run(100, p99=5, slip=5.0), s, 2000)
    assert not slow_gen.passed and slow_gen.limited_by == "generator"


def test_poisson_and_uniform_schedules():
    t = schedule(1000.0, 20000, "poisson", seed=1) / 1e9
    gaps = np.diff(t)
    assert t[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1e-3, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)  # exponential: CV 1
    assert np.array_equal(schedule(1000.0, 100, "poisson", seed=1), schedule(1000.0, 100, "poisson", seed=1))
    u = np.diff(schedule(250.0, 100, "uniform")) / 1e9
    assert np.allclose(u, 0.004)


def _cap(rps, lower=False, limited="p99"):
    return {"rps": rps, "lower_bound": lower, "limited_by": limited, "valid": not lower}


def test_capacity_verdict_words():
    v = capacity_verdict({"float32": _cap(365), "int8": _cap(840)}, ("float32", "int8"), {},
                         bounds_label="p99 \u2264 20 ms", precision=0.1)
    assert v["text"].startswith("Int8 sustains 2.3x the traffic of float32 at p99 \u2264 20 ms (840 vs 365 req/s)")
    assert v["ship"] == "int8" and v["capacity_ratio"] == pytest.approx(840 / 365)
    eq = capacity_verdict({"a": _cap(400), "b": _cap(420)}, ("a", "b"), {}, bounds_label="p99 \u2264 20 ms",
                          precision=0.1)
    assert "same traffic" in eq["text"] and "10% precision" in eq["text"] and eq["ship"] == "a"
    low = capacity_verdict({"a": _cap(400), "b": _cap(900, lower=True, limited="generator")}, ("a", "b"), {},
                           bounds_label="p99 \u2264 20 ms", precision=0.1, sizes={"a": 400, "b": 100})
    assert "at least 2.2x" in low["text"] and "at least 900" in low["text"] and low["ship"] == "b"
    cant = capacity_verdict({"a": _cap(400, lower=True, limited="time_budget"), "b": _cap(900)}, ("a", "b"), {},
                            bounds_label="p99 \u2264 20 ms", precision=0.1)
    assert cant["text"].startswith("Cannot rank") and "time budget ran out" in cant["text"] and not cant["ranked"]


def _agg_runs(a_rps, b_rps):
    lat = {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 2.0, "p99.9": 2.0, "max": 3.0}
    runs = [RunResult("a", 8, int(r), {}, 1.0, dict(lat), repeat=i) for i, r in enumerate(a_rps)]
    runs += [RunResult("b", 8, int(r), {}, 1.0, {**lat, "p99": 2.0 * a_rps[0] / b_rps[0]}, repeat=i)
             for i, r in enumerate(b_rps)]
    return aggregate(runs)


def test_verdict_never_ranks_on_too_few_repeats_and_says_slower_in_words():
    one = make_verdict(_agg_runs([1000], [5200]), ("a", "b"), {})
    assert not one["ranked"] and "3 needed to rank" in one["text"] and one["ship"] == "a"
    assert one["speed"] == "undecided" and one["rested_on"] == "size and quality"
    # more data can make it more confident, never the other way round
    three = make_verdict(_agg_runs([1000, 1010, 990], [5200, 5150, 5230]), ("a", "b"), {})
    assert three["ranked"] and "5.2x faster" in three["text"] and three["ship"] == "b"
    slow = make_verdict(_agg_runs([5200, 5150, 5230], [1000, 1010, 990]), ("a", "b"), {})
    assert slow["ship"] == "a" and slow["ranked"] and "b 5.2x slower than a" in slow["text"]
    assert not re.search(r"0\.\d+x (faster|slower)", slow["text"] + three["text"])
    assert speed_words(0.19, 0.06) == "5.3x slower"
    assert speed_words(2.1, 0.06) == "2.1x faster"
    assert speed_words(1.03, 0.06) == "equal (within 6% noise)"


def test_smaller_target_ships_unless_accuracy_or_speed_says_no():
    agg = _agg_runs([1000, 1010, 990], [1005, 995, 1012])
    sizes = {"a": 4000, "b": 1000}
    v = make_verdict(agg, ("a", "b"), {"a": 0.95, "b": 0.948}, sizes=sizes)
    assert v["ship"] == "b" and "4.0x smaller" in v["text"] and "equal" in v["text"]
    v = make_verdict(agg, ("a", "b"), {"a": 0.95, "b": 0.90}, sizes=sizes)
    assert v["ship"] == "a" and "5.0 pp" in v["text"]
    slower = make_verdict(_agg_runs([2000, 2010, 1990], [1000, 1010, 990]), ("a", "b"), {}, sizes=sizes)
    assert slower["ship"] == "a" and "slower" in slower["text"]


def test_tables_fit_80_columns():
    from rich.console import Console

    from onnxdeploy.cli.bench import _COLUMNS, fit_table

    rows = [["float32-opt-long-name", "32", "1,234 (1,200–1,300)", "12.34 (11.00–13.00)", "http_503=12",
             "3.21 (3.00–3.50)", "6000", "45%", "8.00 (7.00–9.00)", "40.00"]]
    table, dropped = fit_table("bench", list(_COLUMNS), rows, 80)
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table)
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text and "float32-opt-long-name" in text and "target" in text
    assert dropped and "target" not in dropped and "p99 ms" not in dropped


def test_misses_caused_by_late_sends_blame_the_generator_not_the_server():
    s = SearchSettings([Bound("p99", 10)])
    late = _run(100, p99=30)
    late.late_p99_ms, late.service_ms, late.service_us = 25.0, {"p99": 4.0}, np.full(2000, 4000)
    probe = judge(late, s, 2000)
    assert not probe.passed and probe.limited_by == "generator" and "sent late (p99 25.0 ms" in probe.reason
    server = _run(100, p99=30)
    server.late_p99_ms, server.service_ms, server.service_us = 25.0, {"p99": 28.0}, np.full(2000, 28000)
    assert judge(server, s, 2000).limited_by == "p99"
    # an early stop counts from when the generator reached each request: always the server's miss
    stopped = _run(100, p99=30, n=50, early="more than 20 requests over 10 ms")
    stopped.late_p99_ms, stopped.service_ms, stopped.service_us = 40.0, {"p99": 3.0}, np.full(50, 3000)
    assert judge(stopped, s, 2000).limited_by == "p99"
    # with nothing passed yet, a lower rate may be one the generator can offer: halve and go on
    search = CapacitySearch("t", s, 100.0)
    search.record(judge(late, s, 2000))
    assert not search.done and search.next_rate() == 50.0
    search.record(judge(_run(50, p99=5), s, 2000))
    late.rate = search.next_rate()
    search.record(judge(late, s, 2000))  # then it limits the search: what passed is a lower bound
    res = search.result()
    assert search.done and res["rps"] == 50.0 and res["lower_bound"] and res["limited_by"] == "generator"
    assert "sent late" in res["note"]
