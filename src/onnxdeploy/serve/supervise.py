"""Supervision of the server's worker processes: heartbeats, orphans, crash budget.

granian replaces a worker that dies, but it (2.8) cannot tell a worker that stopped answering
(SIGSTOP, a wedged loop) from a healthy one, leaves workers serving when its own process is
killed, and stops the whole server when one worker dies twice within 5.5 s. This module adds:

- **heartbeats**: each worker's event loop touches ``<run dir>/beats/<pid>`` every ``BEAT_S``
  (``Beat``). A worker whose loop does not run cannot beat.
- **the monitor** (``Monitor``, a thread in granian's parent): a worker of this server whose beat
  is older than the heartbeat timeout is killed (SIGKILL), so granian replaces it; a beat of a
  process that is gone is removed.
- **orphans**: a worker whose parent is gone (the parent was SIGKILLed) removes the run
  directory and exits, so it releases the port and leaves no temp dirs (checked on every beat).
- **live workers**: ``live_workers`` counts fresh beats, for readiness and ``/metrics``.
- **the crash budget** (``CrashBudget``): granian's crash-loop guard reads the time of a worker's
  last respawn from ``Granian.respawned_wrks``; this mapping reports a respawn as recent only
  when that worker was respawned ``CRASH_LIMIT`` times within ``CRASH_WINDOW_S``, so a worker
  killed twice is replaced twice, and a real crash loop still stops the server. That attribute is
  granian's, not public API: ``tests/test_serve_hostile.py`` pins the behaviour.

Standard library only: granian's parent imports it.
"""

from __future__ import annotations

import collections
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

from .metrics import process_alive as _alive

log = logging.getLogger("onnxdeploy.serve")

#: the directory of one server's run (metrics files, beats, boot marker); removed at exit
RUN_DIR_ENV = "ONNXDEPLOY_SERVE_RUN_DIR"
#: a worker's event loop beats this often
BEAT_S = 0.5
#: a worker whose last beat is older than this is replaced (``--heartbeat-timeout``)
HEARTBEAT_TIMEOUT_S = 3.0
#: a real crash loop: this many respawns of one worker within the window stop the server
CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0


def beats_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "beats"


class Beat:
    """A worker's heartbeat, driven by its event loop (``loop.call_later``)."""

    def __init__(self, loop, run_dir: str):
        self.loop = loop
        self.run_dir = run_dir
        self.path = beats_dir(run_dir) / str(os.getpid())
        self.parent = os.getppid()
        self.handle = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tick()

    def tick(self) -> None:
        if os.getppid() != self.parent:  # the server's main process is gone
            log.error("worker %d: the server's main process %d is gone; exiting", os.getpid(),
                      self.parent)
            shutil.rmtree(self.run_dir, ignore_errors=True)
            os._exit(3)
        try:
            self.path.touch()
        except OSError:  # the run dir is being removed: the server is stopping
            pass
        self.handle = self.loop.call_later(BEAT_S, self.tick)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
        try:
            self.path.unlink()
        except OSError:
            pass


def live_workers(run_dir: str | os.PathLike, timeout_s: float) -> int:
    """Workers whose last beat is fresher than ``timeout_s``."""
    now = time.time()
    count = 0
    try:
        entries = list(os.scandir(beats_dir(run_dir)))
    except OSError:
        return 0
    for entry in entries:
        try:
            if now - entry.stat().st_mtime <= timeout_s and _alive(int(entry.name)):
                count += 1
        except (OSError, ValueError):
            continue
    return count


class Monitor:
    """A thread of the parent: kills workers whose beat is stale so granian replaces them."""

    def __init__(self, run_dir: str, timeout_s: float):
        self.run_dir = run_dir
        self.timeout_s = timeout_s
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="serve-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(BEAT_S):
            now = time.time()
            try:
                entries = list(os.scandir(beats_dir(self.run_dir)))
            except OSError:
                continue
            for entry in entries:
                try:
                    pid = int(entry.name)
                    age = now - entry.stat().st_mtime
                except (OSError, ValueError):
                    continue
                parent = _parent_of(pid)  # None without /proc: taken as ours
                if not _alive(pid) or parent not in (None, me):
                    _unlink(entry.path)  # a worker that is gone (or not ours)
                elif age > self.timeout_s and not self._stop.is_set():
                    log.error("worker %d has not answered its heartbeat for %.1f s; replacing it",
                              pid, age)
                    self.killed.append(pid)
                    _unlink(entry.path)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


class CrashBudget(dict):
    """``Granian.respawned_wrks`` that tells granian's crash-loop guard about a real loop only.

    granian records ``respawned_wrks[idx] = time.monotonic()`` at each respawn, clears the
    mapping after each, and stops the server when a worker dies within 5.5 s of the time ``get``
    returns. Here ``get`` returns that time only when the worker was respawned ``CRASH_LIMIT``
    times within ``CRASH_WINDOW_S``; else 0 (long ago).
    """

    def __init__(self):
        super().__init__()
        self.history: dict[int, collections.deque] = collections.defaultdict(collections.deque)

    def __setitem__(self, idx, when) -> None:
        times = self.history[idx]
        times.append(when)
        while times and when - times[0] > CRASH_WINDOW_S:
            times.popleft()
        super().__setitem__(idx, when)

    def get(self, idx, default=None):
        times = self.history.get(idx)
        if times and len(times) >= CRASH_LIMIT and time.monotonic() - times[0] <= CRASH_WINDOW_S:
            log.error("worker %d was respawned %d times within %.0f s: a crash loop", idx + 1,
                      len(times), CRASH_WINDOW_S)
            return times[-1]
        return 0




def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
