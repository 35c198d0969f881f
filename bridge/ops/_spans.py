"""OpenTelemetry spans for a bridge's jobs: :func:`instrument`.

A job observer (see ``bridge._observers``) starts one span per job on the
submitting thread, inside the job's copied contextvars (``job._ctx``): the
submitter's active span is the parent, and the job's span, attached in that
same context, is the active span inside the job's coroutine, so spans started
there (an HTTP client's) are its children. The span ends when the job does.

Only ``opentelemetry-api`` is needed, and only when :func:`instrument` is
called; without an SDK (or a ``tracer_provider``) the spans are the API's
no-op spans. Per job the cost is the tracer's: one ``start_span`` and one
``end``, plus a dict entry from submit to finish.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Final, final

from bridge._job import Job, JobState, one_line

from ._target import OpsTarget

if TYPE_CHECKING:
    from collections.abc import Callable

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Status, StatusCode, Tracer, TracerProvider

__all__ = ["Instrumentation", "instrument"]

_ERRORS: Final = (JobState.FAILED, JobState.TIMED_OUT)
#: ``state.value`` without the enum's property lookup, per job.
_OUTCOMES: Final = {state: state.value for state in JobState}


def instrument(bridge: OpsTarget, tracer_provider: TracerProvider | None = None) -> Instrumentation:
    """Give each job of *bridge* an OpenTelemetry span, from now on.

    Each job submitted from now on gets a span named ``bridge <kind>`` that
    starts at submit and ends when the job ends. Its parent is the span active
    on the submitting thread (the job carries the submitter's contextvars), and
    inside the job's coroutine it is the active span, so a span started there
    is its child. Attributes: ``bridge.name``, ``bridge.job.id``,
    ``bridge.job.kind``, ``bridge.job.key`` (when the job has a key),
    ``thread.name`` (the submitting thread), and at the end
    ``bridge.job.outcome`` (``succeeded``, ``failed``, ``cancelled``,
    ``timed_out``), ``bridge.job.queue_seconds`` (submit to start, or to the
    end for a job that never started) and ``bridge.job.run_seconds`` (start
    to end; absent if it never started). A failed or timed-out job's span has
    status ERROR and the exception recorded; a cancelled job's status is left
    unset (cancelling is deliberate).

    Each call adds its own spans: instrument a bridge once.

    Args:
        bridge: the bridge.
        tracer_provider: where the spans go; the global tracer provider
            (``opentelemetry.trace.set_tracer_provider``) by default.

    Returns:
        The handle whose :meth:`~Instrumentation.close` undoes it; the
        bridge's shutdown does too.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.

    **Thread safety:** any thread.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry import trace
    except ImportError:
        raise ImportError(
            'bridge.ops.instrument() needs opentelemetry-api: pip install "bridge[ops]"'
        ) from None
    from bridge import __version__

    tracer = trace.get_tracer("bridge", __version__, tracer_provider)
    observer = _SpanObserver(
        bridge,
        tracer,
        _OTel(
            otel_context.get_current,
            otel_context.attach,
            trace.set_span_in_context,
            trace.Status,
            trace.StatusCode.ERROR,
        ),
    )
    bridge._observe(observer)
    instrumentation = Instrumentation(observer)
    bridge._at_shutdown(instrumentation.close)
    return instrumentation


@final
class Instrumentation:
    """Spans for one bridge's jobs (what :func:`instrument` returns).

    **Thread safety:** every method may be called from any thread.
    """

    __slots__ = ("_observer",)

    def __init__(self, observer: _SpanObserver) -> None:
        self._observer = observer

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the bridge's shutdown began)."""
        return self._observer.closed

    def close(self) -> None:
        """Start no more spans; idempotent.

        The spans of jobs already submitted still end when their jobs do
        (a shutdown resolves every job, so after it they all have); the
        observer then leaves the bridge.
        """
        self._observer.close()

    def __repr__(self) -> str:
        o = self._observer
        state = "closed" if o.closed else "active"
        return f"<Instrumentation bridge={o.bridge_name!r} {state}, {o.open_spans} spans open>"


@final
class _SpanObserver:
    """The job observer that starts and ends the spans (see the module docstring)."""

    __slots__ = ("_bridge", "_detached", "_open", "_otel", "_tracer", "bridge_name", "closed")

    def __init__(self, bridge: OpsTarget, tracer: Tracer, otel: _OTel) -> None:
        self._bridge = bridge
        self.bridge_name: Final = bridge.name
        self._tracer = tracer
        self._otel = otel
        # job id -> its span, from submit to finish. Each entry is added and
        # removed by one dict operation (atomic): no lock on the hot path.
        self._open: dict[int, Span] = {}
        #: Set by close(): job_submitted starts no more spans.
        self.closed = False
        # Set once the observer has left the bridge (closed, no span open).
        self._detached = False

    @property
    def open_spans(self) -> int:
        return len(self._open)

    # -- the observer (any thread; see bridge._observers) ------------------------------

    def job_submitted(self, job: Job[Any]) -> None:
        if self.closed:
            return
        span = job._ctx.run(self._start, job)
        self._open[job.id] = span
        if self._detached:  # close() swept the open spans meanwhile: end this one too
            self._end_left(job.id)

    def job_started(self, job: Job[Any]) -> None:
        pass  # the span reads the start time from the job when it ends

    def job_finished(self, job: Job[Any]) -> None:
        span = self._open.pop(job.id, None)
        if span is None:
            return
        self._end(span, job)
        if self.closed and not self._open:
            self._detach()

    # -- helpers -----------------------------------------------------------------------

    def _start(self, job: Job[Any]) -> Span:
        """Start *job*'s span and make it current; runs inside ``job._ctx``."""
        kind = job.kind
        attributes: dict[str, str | int] = {
            "bridge.name": self.bridge_name,
            "bridge.job.id": job.id,
            "bridge.job.kind": kind,
            "thread.name": threading.current_thread().name,  # the submitting thread
        }
        if job.key is not None:
            attributes["bridge.job.key"] = job.key
        otel = self._otel
        parent = otel.get_current()  # the submitter's: job._ctx is a copy of its context
        span = self._tracer.start_span(f"bridge {kind}", parent, attributes=attributes)
        otel.attach(otel.set_span(span, parent))  # in job._ctx only: the job owns that copy
        return span

    def _end(self, span: Span, job: Job[Any]) -> None:
        now = time.monotonic()
        state = job.state
        started = job._started_mono
        attributes: dict[str, str | float] = {"bridge.job.outcome": _OUTCOMES[state]}
        if started:
            attributes["bridge.job.queue_seconds"] = started - job._submitted_mono
            attributes["bridge.job.run_seconds"] = now - started
        else:  # it never ran: it was queued until it ended
            attributes["bridge.job.queue_seconds"] = now - job._submitted_mono
        span.set_attributes(attributes)
        if state in _ERRORS:
            otel = self._otel
            error = job._error
            if error is not None:
                span.record_exception(error)
                span.set_status(otel.status(otel.error, one_line(error)))
            else:
                span.set_status(otel.status(otel.error))
        span.end()

    def close(self) -> None:
        self.closed = True
        if not self._open:
            self._detach()

    def _detach(self) -> None:
        """Leave the bridge; end any span a racing job_submitted added meanwhile."""
        if self._detached:
            return
        self._detached = True
        self._bridge._unobserve(self)
        # A submitter that passed the `closed` check before close() may have
        # added a span after the check for an empty dict: it ends here, or in
        # job_submitted, which looks at _detached after adding (whichever pops it).
        for job_id in list(self._open):
            self._end_left(job_id)

    def _end_left(self, job_id: int) -> None:
        span = self._open.pop(job_id, None)
        if span is not None:
            span.end()


@final
class _OTel:
    """What the observer uses of ``opentelemetry-api`` (imported by :func:`instrument`)."""

    __slots__ = ("attach", "error", "get_current", "set_span", "status")

    def __init__(
        self,
        get_current: Callable[[], Context],
        attach: Callable[[Context], object],
        set_span: Callable[[Span, Context | None], Context],
        status: type[Status],
        error: StatusCode,
    ) -> None:
        self.get_current = get_current
        self.attach = attach
        self.set_span = set_span
        self.status = status
        self.error = error
