"""``BenchOptions``: everything ``run_bench`` needs, and the check that the combination can run.

Its own module so that ``run.py`` (the run) and ``runs.py`` (warm-up, fixed runs, the SLO search)
both take it from below instead of from each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..errors import OptionError
from ..measure.numeric import DEFAULT_MIN_COSINE
from .bodies import SEND_MODES
from .servers import DEFAULT_READY_TIMEOUT_S
from .slo import (
    CONFIRM_RUNS,
    DEFAULT_BUDGET_S,
    DEFAULT_PRECISION,
    MAX_RUN_S,
    MIN_DURATION_S,
    SearchSettings,
    parse_slo,
)
from .verdict import DEFAULT_MAX_ACCURACY_DROP

DEFAULT_CONCURRENCY = (1, 8, 32)
DEFAULT_WARMUP = 200
#: a result at or above this fraction of the generator's ceiling is flagged generator-bound
BOUND_FRACTION = 0.7
ENGINES = ("native", "locust", "wrk")
ARRIVALS = ("poisson", "uniform")
#: seconds of extra repeats when the repeats spread too wide to rank the targets
DEFAULT_RANK_BUDGET_S = 20.0
#: targets one bench compares: a baseline and up to two variants (the pipeline serves three)
MAX_TARGETS = 3


@dataclass
class BenchOptions:
    """Everything ``run_bench`` needs; give ``models`` (files to serve) or ``urls`` (running servers)."""

    models: Sequence[str] = ()
    urls: Sequence[str] = ()
    names: Sequence[str] = ()
    ports: Sequence[int] = ()
    host: str = "127.0.0.1"
    concurrency: Sequence[int] = DEFAULT_CONCURRENCY
    requests: int | None = None
    duration_s: float | None = None
    repeats: int = 3
    rate: Sequence[float] = ()
    engine: str = "native"
    #: ``http`` or ``grpc`` (the load; readiness and accuracy stay on HTTP where there is one)
    protocol: str = "http"
    data: str | None = None
    dims: dict[str, int] = field(default_factory=dict)
    warmup: int = DEFAULT_WARMUP
    server_workers: int | None = None
    server_threads: int | None = None
    ort_threads: int | None = None
    pin: bool = False
    accuracy: bool = True
    ready_timeout_s: float = DEFAULT_READY_TIMEOUT_S
    timeout_s: float = 30.0
    bound_fraction: float = BOUND_FRACTION
    arrivals: str = "poisson"
    slo: Sequence[str] = ()
    slo_precision: float = DEFAULT_PRECISION
    slo_budget_s: float = DEFAULT_BUDGET_S
    slo_start: float | None = None
    slo_max_rate: float | None = None
    slo_min_duration_s: float = MIN_DURATION_S
    slo_min_queries: int | None = None
    slo_max_run_s: float = MAX_RUN_S
    slo_confirm_runs: int = CONFIRM_RUNS
    locust_workers: int = 0
    locust_master: str | None = None
    expect_workers: int | None = None
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    #: what the requests carry: ``auto`` (texts for a text model with .txt/.jsonl data), ``texts``, ``tokens``
    send: str = "auto"
    #: an embedding candidate whose min cosine to the baseline is below this does not ship
    min_cosine: float = DEFAULT_MIN_COSINE
    #: seconds of extra repeats bench may spend when the speed comparison is undecided (spread too wide)
    rank_budget_s: float = DEFAULT_RANK_BUDGET_S
    #: False: report findings only, no ``ship`` (the pipeline decides once for the whole run)
    decide: bool = True

    def search_settings(self) -> SearchSettings | None:
        """The capacity search's settings, or None without ``--slo``."""
        if not self.slo:
            return None
        return SearchSettings(
            parse_slo(self.slo), precision=self.slo_precision, min_duration_s=self.slo_min_duration_s,
            min_queries=self.slo_min_queries, max_run_s=self.slo_max_run_s, confirm_runs=self.slo_confirm_runs,
            start_rate=self.slo_start, max_rate=self.slo_max_rate, budget_s=self.slo_budget_s)

    def validate(self) -> None:
        """Raise OptionError for combinations that cannot run."""
        grpc_urls = [u for u in self.urls if u.startswith("grpc://")]
        if self.protocol not in ("http", "grpc"):
            raise OptionError(f"--protocol {self.protocol}: expected http or grpc")
        if self.protocol == "grpc" or grpc_urls:
            if self.engine != "native":
                raise OptionError(f"--protocol grpc needs --engine native; {self.engine} speaks "
                                  "HTTP only")
            if self.rate or self.slo:
                raise OptionError("--rate and --slo over gRPC are not supported yet; use "
                                  "--concurrency (closed loop)")
            if self.urls and len(grpc_urls) != len(self.urls):
                raise OptionError("--protocol grpc with --url: give every target as "
                                  "grpc://HOST:PORT")
        bad_ports = [p for p in self.ports if not 1 <= int(p) <= 65535]
        if bad_ports:
            raise OptionError(f"--ports {','.join(map(str, self.ports))}: ports must be 1-65535, got {bad_ports[0]}")
        if self.rate and tuple(self.concurrency) != DEFAULT_CONCURRENCY:
            raise OptionError("--rate (open loop) and --concurrency (closed loop) exclude each other; give one")
        if self.slo and self.rate:
            raise OptionError("--slo searches the rate itself; --rate and --slo exclude each other")
        if self.slo and tuple(self.concurrency) != DEFAULT_CONCURRENCY:
            raise OptionError("--slo (open-loop capacity search) and --concurrency (closed loop) exclude each other")
        if self.slo and (self.requests is not None or self.duration_s is not None):
            raise OptionError("--slo sets each run's length itself (--slo-min-duration); "
                              "--requests/--duration do not apply")
        if self.slo and self.engine != "native":
            raise OptionError(f"--slo needs open-loop load (--engine native); {self.engine} is closed-loop only")
        if self.send not in SEND_MODES:
            raise OptionError(f"--send {self.send}: expected one of {', '.join(SEND_MODES)}")
        if not 0 < self.min_cosine <= 1:
            raise OptionError(f"--min-cosine {self.min_cosine}: expected a cosine in (0, 1]")
        if self.arrivals not in ARRIVALS:
            raise OptionError(f"--arrivals {self.arrivals}: expected one of {', '.join(ARRIVALS)}")
        if (self.locust_workers or self.locust_master or self.expect_workers) and self.engine != "locust":
            raise OptionError("--locust-workers/--locust-master/--expect-workers need --engine locust")
        if self.locust_workers < 0:
            raise OptionError(f"--locust-workers {self.locust_workers}: expected >= 0")
        self.search_settings()  # parse the bounds now: a bad --slo fails before any server starts
        if bool(self.models) == bool(self.urls):
            raise OptionError("give model files (A.onnx B.onnx) or --url URL (repeatable), not both")
        n = len(self.models) or len(self.urls)
        if not 1 <= n <= MAX_TARGETS:
            raise OptionError(f"bench takes one to {MAX_TARGETS} targets (a baseline first, then the "
                              f"variants to compare with it), got {n}")
        if self.names and len(self.names) != n:
            raise OptionError(f"--name given {len(self.names)} times for {n} targets")
        if self.ports and (self.urls or len(self.ports) != n):
            raise OptionError(f"--ports needs one port per model file ({n}), got {len(self.ports)}")
        if self.requests is not None and self.duration_s is not None:
            raise OptionError("give --requests or --duration, not both")
        if self.engine not in ENGINES:
            raise OptionError(f"--engine {self.engine}: expected one of {', '.join(ENGINES)}")
        if self.rate and self.engine != "native":
            raise OptionError(f"--rate (open loop) needs --engine native; {self.engine} is closed-loop only")
        if self.repeats < 1 or any(c < 1 for c in self.concurrency) or not self.concurrency:
            raise OptionError("--repeats and every --concurrency level must be >= 1")
        if any(r <= 0 for r in self.rate):
            raise OptionError("every --rate must be > 0 requests/s")
