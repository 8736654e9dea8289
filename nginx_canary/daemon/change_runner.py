"""Step changes and restores on a worker thread, so the daemon's checks keep their cadence meanwhile.

A step change or restore (write the files, ``nginx -t``, reload, wait for the
new workers) takes 60-400 ms on a loaded host, longer when nginx is slow to
start its workers. Run on the daemon's loop, it would hold back every check
that falls due meanwhile. :class:`ChangeRunner` runs such a call on its one
worker thread while the calling (loop) thread goes on with ``pump``: reading
the logs and running the checks that fall due, without changing anything on
nginx. The call itself is not hurried nor interrupted: it finishes, and only
then does the loop act on what the checks found (a rollback right after the
step change, not in the middle of its transaction).

One change at a time: the runner has one worker, and a call made while one
is under way (from ``pump``) runs inline rather than waiting for itself.

A restore is ``urgent``: the rollback is decided and nothing the checks find
can change it, so ``pump`` reads no logs meanwhile (it would only compete for
the GIL with the restore on a flooded host).
"""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Callable, Dict, Optional, Sequence, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class ChangeRunner:
    """Runs calls on one worker thread while the caller's thread pumps.

    ``wait(timeout)`` blocks the calling thread until ``wake()`` is called or
    ``timeout`` seconds pass; ``pump()`` does one round of on-time work;
    ``next_wait()`` says how long to wait before the next round. Until
    :meth:`enable` (for example during the daemon's start-up recovery) calls
    run inline.
    """

    def __init__(self, *, wait: Callable[[float], None], wake: Callable[[], None], pump: Callable[[], None],
                 next_wait: Callable[[], float]) -> None:
        self._wait = wait
        self._wake = wake
        self._pump = pump
        self._next_wait = next_wait
        self._executor: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self.busy = False
        self.urgent = False  # the call under way is a restore: pump only what keeps the daemon alive

    def enable(self) -> None:
        """From now on, run calls on the worker thread."""
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                   thread_name_prefix="nginx-canary-change")

    def close(self) -> None:
        """Wait for a call under way (there is none unless close is called from pump) and stop the worker."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def run(self, fn: Callable[..., T], *args: Any, urgent: bool = False) -> T:
        """``fn(*args)`` on the worker thread, pumping until it returns; its result, or its exception raised.

        ``urgent`` (a restore) is :attr:`urgent` while the call is under way.
        """
        if self._executor is None or self.busy:
            return fn(*args)
        future = self._executor.submit(fn, *args)
        future.add_done_callback(lambda _: self._wake())
        self.busy = True
        self.urgent = urgent
        try:
            while not future.done():
                self._wait(self._next_wait())
                if future.done():
                    break
                try:
                    self._pump()
                except Exception:  # noqa: BLE001 - the change under way must be waited for, whatever happens here
                    log.exception("while a change was under way: the loop's work failed")
        finally:
            if not future.done():
                concurrent.futures.wait([future])
            self.busy = self.urgent = False
        return future.result()


class OffLoopApplier:
    """A :class:`~nginx_canary.rollout.ports.SplitApplier` whose nginx-changing calls go through a :class:`ChangeRunner`.

    ``begin`` (the snapshot), ``apply``, ``restore`` and ``restore_weights``
    write files and reload nginx; everything else only reads and runs inline.
    """

    def __init__(self, inner: Any, runner: ChangeRunner) -> None:
        self.inner = inner
        self.runner = runner

    def begin(self, rollout_name: str) -> str:
        return self.runner.run(self.inner.begin, rollout_name)

    def apply(self, percent: Any) -> Dict[str, str]:
        return self.runner.run(self.inner.apply, percent)

    def restore(self, snapshot_id: str) -> Dict[str, str]:
        return self.runner.run(self.inner.restore, snapshot_id, urgent=True)

    def restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        return self.runner.run(self.inner.restore_weights, snapshot_id, urgent=True)

    def plan(self, percent: Any) -> Dict[str, str]:
        return self.inner.plan(percent)

    def plan_restore_weights(self, snapshot_id: str) -> Dict[str, str]:
        return self.inner.plan_restore_weights(snapshot_id)

    def snapshot_files(self, snapshot_id: str) -> Dict[str, str]:
        return self.inner.snapshot_files(snapshot_id)

    def files_now(self) -> Dict[str, str]:
        return self.inner.files_now()

    def hashes_of(self, paths: Sequence[str]) -> Dict[str, str]:
        return self.inner.hashes_of(paths)
