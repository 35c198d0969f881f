"""Processes as jobs: child programs and worker processes, on a bridge.

:class:`BridgeProcesses` is one base of :class:`~bridge.Bridge`:
:meth:`run_process` (a child program as a job, ``_process.py``) and
:meth:`to_process` / :meth:`process_map` (CPU-bound Python in a forkserver
pool, ``_procpool.py``). Each is a thin layer over the core calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._arguments import check_blocking_function, check_count
from ._exceptions import BridgeClosed, WrongThread
from ._intake import Intake
from ._job import Job
from ._map import MapIterator
from ._process import JobSlot, ProcessResult, check_spec, run_child
from ._procpool import KILL_GRACE, ProcessPool, process_map
from ._typing import USE_DEFAULT, DefaultType, TypeVarTuple, Unpack

if TYPE_CHECKING:
    from ._shutdown import Shutdown

__all__ = ["BridgeProcesses"]

T = TypeVar("T")
R = TypeVar("R")
PosArgsT = TypeVarTuple("PosArgsT")


class BridgeProcesses:
    """Child programs and worker processes; :class:`~bridge.Bridge` inherits them."""

    if TYPE_CHECKING:  # provided by Bridge
        _intake: Intake
        _shutdown: Shutdown
        _procpool: ProcessPool

        def _current_deadline(self) -> float | None: ...

        def _on_loop_thread(self) -> bool: ...

        def _check_on_loop(self, what: str) -> None: ...

    def run_process(
        self,
        args: Sequence[str | bytes | os.PathLike[str] | os.PathLike[bytes]],
        /,
        *,
        key: str | None = None,
        kind: str = "process",
        on_conflict: Literal["reject", "replace", "join"] = "reject",
        timeout: float | DefaultType | None = USE_DEFAULT,
        cwd: str | bytes | os.PathLike[str] | os.PathLike[bytes] | None = None,
        env: Mapping[str, str] | None = None,
        input: bytes | str | None = None,
        check: bool = False,
        max_output: int = 1_048_576,
        kill_grace: float = 2.0,
        kill_group_on_exit: bool = True,
        on_line: Callable[[str, str], object] | None = None,
    ) -> Job[ProcessResult]:
        """Run the program *args* as a job; return the job (its value: a :class:`ProcessResult`).

        The child runs in a session and process group of its own, with stdin
        from ``/dev/null`` unless *input* is given (so it never waits for a
        terminal). Its job is like any other: *key*, *kind* (``limits``,
        ``timeouts``), *timeout*, ``cancel()``, ``jobs()`` and the shutdown
        report; its :class:`JobInfo` has the child's ``pid`` and ``program``
        (``args[0]`` only, never the other arguments).

        Args:
            args: the program and its arguments, e.g. ``["ffmpeg", "-i", src, dst]``
                (a list; never run through a shell).
            key: as for :meth:`submit`.
            on_conflict: as for :meth:`submit`.
            timeout: as for :meth:`submit`.
            kind: the job's kind; ``"process"`` unless given (one kind for all
                programs, so give e.g. ``kind="ffmpeg"`` to limit one program).
            cwd: the child's working directory (the bridge's process's by default).
            env: the child's environment (the bridge's process's by default).
            input: bytes (or str, sent as UTF-8) written to the child's stdin,
                which is then closed.
            check: raise :class:`ProcessFailed` from the job on a non-zero exit.
            max_output: bytes of stdout and of stderr each kept; the rest is
                read and discarded, and :attr:`ProcessResult.truncated` is set.
            kill_grace: seconds between SIGTERM and SIGKILL when the group is ended.
            kill_group_on_exit: after the child exits by itself, end what it
                left in its process group (a grandchild holding the output
                pipe would otherwise keep the job open). ``False``: leave them,
                and the job waits for its output pipes to close, as
                :func:`subprocess.run` does.
            on_line: ``on_line(stream, line)`` on the loop thread for each line
                of output (``stream`` is ``"stdout"`` or ``"stderr"``; ``line``
                decoded as UTF-8 with replacement, without its line ending; a
                line longer than 64 KiB comes in pieces). It must not block; if
                it raises, the child's group is ended and the job fails with
                that error.

        Returns:
            The job.

        Raises:
            ValueError: *args* is empty, or another argument is out of range.
            TypeError: *args* is not a list of str, bytes or path-like values,
                or another argument has the wrong type.
            DuplicateJob, Overloaded, BridgeClosed: as for :meth:`submit`.

        A refused call leaves nothing behind (no job, no child). A missing
        program or *cwd* fails the job with the ``OSError`` exec raised
        (``result()`` raises it).

        **Thread safety:** any thread, the loop thread included.

        **Cancellation and timeouts:** when the job is cancelled (``cancel()``,
        its key, ``replace``, shutdown) or its deadline expires, the child's
        group receives SIGTERM, then SIGKILL after *kill_grace*; the job ends
        only once the child is reaped and its group is empty, and its
        ``JobCancelled``/``JobTimeout`` message says how the child ended.
        """
        spec = check_spec(
            args, cwd, env, input, check, max_output, kill_grace, kill_group_on_exit, on_line
        )
        slot = JobSlot(spec.program)
        children = self._shutdown.children
        job: Job[ProcessResult] = self._intake.submit(
            run_child, (spec, slot, children), key, kind, timeout, on_conflict, False
        )
        # A job joined (on_conflict="join") keeps its own child's fields; only its
        # submitter attaches it, before or after this thread looks.
        if on_conflict != "join" or job._program is None:
            slot.attach(job)
        return job

    async def to_process(
        self, fn: Callable[[Unpack[PosArgsT]], T], /, *args: Unpack[PosArgsT]
    ) -> T:
        """Run CPU-bound ``fn(*args)`` in one of the bridge's worker processes.

        *fn*, *args* and the result must pickle; *fn* must be importable by
        the worker (a module-level function). The pool (``process_workers``
        processes, ``forkserver`` start method, SIGINT ignored) starts at the
        first call and is shut down with the bridge: queued calls are
        cancelled and the workers terminated, never waited for.

        Raises:
            WrongThread: not awaited on the bridge's loop (inside a job).
            BridgeClosed: the bridge has shut down its pool.
            concurrent.futures.process.BrokenProcessPool: the worker died
                (or was killed, see below).
            Exception: whatever *fn* raised in the worker.

        **Cancellation and timeouts:** a call still queued is dropped; one
        that is running is not interrupted (killing a worker breaks the whole
        pool): the await ends at once with ``CancelledError`` and the result is
        discarded when it arrives. But if the job's deadline cancelled it and
        the worker is still busy with it ``KILL_GRACE`` (2.0 s) later, the
        pool's workers are killed and the pool is replaced; other calls running
        in it then fail with ``BrokenProcessPool``. Shutdown terminates the
        workers when it begins (a running call cannot be bounded otherwise):
        a call still running then raises :class:`BridgeClosed`.
        """
        self._check_on_loop("to_process")
        check_blocking_function("fn", fn)
        deadline = self._current_deadline()
        executor, future = self._procpool.submit(fn, args)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            if self._procpool.closed:
                raise BridgeClosed(
                    "the bridge shut its worker processes down while this to_process() call ran"
                ) from None
            raise
        except asyncio.CancelledError:
            if deadline is not None and not future.done() and time.monotonic() >= deadline:
                asyncio.get_running_loop().call_later(
                    KILL_GRACE, self._kill_overrun, executor, future
                )
            raise

    def _kill_overrun(
        self,
        executor: concurrent.futures.ProcessPoolExecutor,
        future: concurrent.futures.Future[Any],
    ) -> None:
        """A deadline passed KILL_GRACE ago and the worker still runs: replace the pool."""
        if not future.done():
            self._procpool.replace(executor, kill=True)

    def process_map(
        self,
        fn: Callable[[T], R],
        iterable: Iterable[T],
        /,
        *,
        concurrency: int | None = None,
        chunksize: int = 64,
        ordered: bool = True,
        on_progress: Callable[[int, int | None], object] | None = None,
    ) -> MapIterator[R]:
        """Apply CPU-bound ``fn(item)`` in the worker processes, lazily; yield the results.

        Items are sent in chunks of *chunksize* (fewer round trips); at most
        *concurrency* chunks are in flight, finished ones not yet yielded
        included, so at most ``concurrency * chunksize`` items have been pulled
        from *iterable* and not yet yielded: memory does not grow with the
        input's length (unlike ``ProcessPoolExecutor.map``, which submits
        everything at once).

        Args:
            fn: a picklable, module-level function of one argument.
            iterable: the items; a generator is fine (and is not read ahead).
            concurrency: chunks in flight; by default ``process_workers * 2``.
            chunksize: items per chunk.
            ordered: yield in input order (``True``) or as chunks complete.
            on_progress: ``on_progress(done, total)`` on the iterating thread
                after each result; *total* is ``len(iterable)`` if it has one.

        Returns:
            An iterator of the results. Nothing runs before the first ``next()``.

        Raises:
            ValueError: *concurrency* or *chunksize* < 1.
            WrongThread: called, or the iterator advanced, on the loop thread.
            BridgeClosed: the bridge has shut down its pool.

        **Thread safety:** any thread but the loop thread; needs no job and
        does not start the bridge's loop.

        **Cancellation:** the first failure is raised from the iterator and
        cancels the queued chunks; so does closing the iterator early
        (``break``, ``close()``, garbage collection). Chunks already running
        finish in their worker and their results are dropped.
        """
        check_blocking_function("fn", fn)
        if not isinstance(iterable, Iterable):
            raise TypeError(f"iterable must be iterable, not {type(iterable).__name__}")
        if concurrency is None:
            concurrency = self._procpool.workers * 2
        check_count("concurrency", concurrency, allow_none=False)
        check_count("chunksize", chunksize, allow_none=False)
        if on_progress is not None and not callable(on_progress):
            raise TypeError(f"on_progress must be callable or None, not {on_progress!r}")
        if self._on_loop_thread():
            raise WrongThread(
                "Bridge.process_map() on the bridge's loop thread would block the loop while "
                "it waits for worker processes: a deadlock. Inside coroutines use "
                "'await bridge.to_process(...)'."
            )
        return process_map(
            self._procpool,
            self._on_loop_thread,
            fn,
            iterable,
            concurrency,
            chunksize,
            ordered,
            on_progress,
        )
