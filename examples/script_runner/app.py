"""The script runner: a Flask app that runs allow-listed scripts as bridge process jobs.

The incident this rebuilds: a dashboard started scripts with ``Popen`` and
forgot them. The same script ran many times at once, scripts waited forever
on stdin, and nothing listed or stopped them. Here every script is a
``Bridge.run_process`` job, and the bridge does the bookkeeping:

* the job's key (``script:<name>``) refuses a second start of a running script;
* the script's own timeout is the job's deadline;
* ``Bridge.jobs()`` lists what runs (pid, program, age, deadline);
* ``Job.cancel()`` and ``Bridge.cancel_all()`` stop scripts: SIGTERM to the
  script's process group, SIGKILL after its ``kill_grace``, and the job ends
  only once the child is reaped;
* stdin is ``/dev/null``, so a script that asks for input gets end-of-file;
* ``Bridge.shutdown()`` (when the server stops) ends every script left.

What the app adds is small: the allow-list, the token, and a record of each
script's last run (its output tail and how it ended).
"""

from __future__ import annotations

import hmac
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from flask import Flask, Response, jsonify, request

from bridge import Bridge, DuplicateJob, Job, JobCancelled, JobInfo, JobTimeout

#: The allow-list: every ``*.py`` file in this directory, read once at start.
SCRIPTS_DIR: Final = Path(__file__).resolve().parent / "scripts"

#: The environment variable that may hold the API token (never passed to scripts).
TOKEN_ENV: Final = "SCRIPT_RUNNER_TOKEN"

#: The bridge kind of script jobs.
KIND: Final = "script"

#: How many characters of a script's stdout and stderr a result keeps (the tail).
TAIL_CHARS: Final = 2000

#: How many bytes of each stream the bridge keeps per run (the rest is discarded).
MAX_OUTPUT: Final = 256 * 1024

#: The longest ``?wait=`` a request may ask for, in seconds.
MAX_WAIT: Final = 60.0

_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]*")


@dataclass(frozen=True)
class ScriptConfig:
    """How one script runs."""

    #: Seconds the script may run (its job's deadline); ``None`` for no limit.
    timeout: float | None = 60.0
    #: Seconds between SIGTERM and SIGKILL when it is stopped.
    kill_grace: float = 2.0


#: Each script's own settings; a script in the directory without an entry
#: gets ``ScriptConfig()`` (60 s, 2 s grace).
SCRIPTS: Final[Mapping[str, ScriptConfig]] = {
    "quick": ScriptConfig(timeout=10.0),
    "progress": ScriptConfig(timeout=30.0),
    "stubborn": ScriptConfig(timeout=60.0, kill_grace=1.0),
    "ask": ScriptConfig(timeout=10.0),
}


@dataclass(frozen=True)
class Script:
    """One allow-listed script: its name, its file and its settings."""

    name: str
    path: Path
    config: ScriptConfig


class UnknownScript(LookupError):
    """Raised for a name that is not in the allow-list."""


class AlreadyRunning(Exception):
    """Raised when a script is started while it runs; carries the running child's pid."""

    def __init__(self, name: str, pid: int | None) -> None:
        super().__init__(f"script {name!r} is already running (pid {pid})")
        self.pid = pid


def load_allow_list(
    directory: Path, config: Mapping[str, ScriptConfig] = SCRIPTS
) -> dict[str, Script]:
    """The scripts of *directory* (its ``*.py`` files), each with its settings.

    Raises:
        ValueError: *config* names a script the directory does not have, or a
            file name is not a plain lowercase name.
    """
    found: dict[str, Script] = {}
    for path in sorted(directory.glob("*.py")):
        if not path.is_file():
            continue
        if not _NAME.fullmatch(path.stem):
            raise ValueError(f"script file name {path.name!r} is not [a-z0-9_-]+.py")
        found[path.stem] = Script(path.stem, path, config.get(path.stem, ScriptConfig()))
    missing = sorted(set(config) - set(found))
    if missing:
        raise ValueError(f"configured scripts missing from {directory}: {', '.join(missing)}")
    return found


class _Run:
    """One run of a script. Fields other than ``job`` change under the runner's lock."""

    __slots__ = ("job", "lines", "output_bytes", "script", "summary")

    def __init__(self, script: Script) -> None:
        self.script = script
        self.job: Job[Any] | None = None
        self.lines: deque[tuple[str, str]] = deque(maxlen=50)
        self.output_bytes = {"stdout": 0, "stderr": 0}  # as seen line by line
        self.summary: dict[str, Any] | None = None


class ScriptRunner:
    """Starts, lists and stops allow-listed scripts on one bridge.

    Args:
        scripts: the allow-list (see :func:`load_allow_list`).
        max_running: how many scripts may run at once; more wait their turn
            (their deadline counts from the start request).

    **Thread safety:** every method may be called from any thread (Flask's
    request threads); the bridge's done callbacks and line callbacks run on
    its loop thread. One lock guards the runs.
    """

    def __init__(self, scripts: Mapping[str, Script], *, max_running: int = 4) -> None:
        self.scripts: Final = dict(scripts)
        self.bridge: Final = Bridge(
            "script-runner", default_timeout=None, limits={KIND: max_running}
        ).start()
        # Guards _running, _last and every _Run's fields; _changed is notified
        # when a line arrives or a run ends.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._running: dict[str, _Run] = {}
        self._last: dict[str, dict[str, Any]] = {}
        # The scripts' environment: ours without the token.
        self._env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
        self._env["PYTHONUNBUFFERED"] = "1"

    def close(self, timeout: float = 2.0) -> None:
        """Shut the bridge down: running scripts are stopped and reaped."""
        self.bridge.shutdown(timeout=timeout)

    # -- starting ------------------------------------------------------------

    def script(self, name: str) -> Script:
        """The allow-listed script called *name*; :class:`UnknownScript` if none."""
        script = self.scripts.get(name)
        if script is None:
            raise UnknownScript(name)
        return script

    def start(self, name: str) -> dict[str, Any]:
        """Start the script; return its running entry (see :meth:`running`).

        Waits up to a second for the child's pid (``None`` if it is still
        queued behind ``max_running``).

        Raises:
            UnknownScript: *name* is not allow-listed.
            AlreadyRunning: it runs already.
        """
        script = self.script(name)
        run = _Run(script)
        try:
            job = self.bridge.run_process(
                [sys.executable, str(script.path)],
                key=f"{KIND}:{name}",
                kind=KIND,
                timeout=script.config.timeout,
                kill_grace=script.config.kill_grace,
                cwd=script.path.parent,
                env=self._env,
                max_output=MAX_OUTPUT,
                on_line=lambda stream, line: self._on_line(run, stream, line),
            )
        except DuplicateJob:
            other = self.bridge.get(f"{KIND}:{name}")
            pid = None if other is None else _wait_for_pid(other, 1.0).pid
            raise AlreadyRunning(name, pid) from None
        run.job = job
        with self._lock:
            self._running[name] = run
        job.add_done_callback(lambda _: self._finished(run))
        info = _wait_for_pid(job, 1.0)
        return self._entry(name, info, run)

    # -- inspecting ----------------------------------------------------------

    def running(self) -> list[dict[str, Any]]:
        """The scripts that run or wait to run, oldest first.

        Each entry: ``name``, ``state``, ``pid``, ``program``, ``age`` (seconds
        since it started, or since it was asked for while queued),
        ``time_left`` (seconds to its deadline, ``None`` without one) and
        ``last_line`` (its latest line of output).
        """
        entries = []
        for info in self.bridge.jobs(KIND):
            name = (info.key or "").removeprefix(f"{KIND}:")
            with self._lock:
                run = self._running.get(name)
            entries.append(self._entry(name, info, run))
        return entries

    def status(self, name: str, wait: float = 0.0) -> dict[str, Any]:
        """The script's current run (or ``None``) and its last finished run (or ``None``).

        With *wait* > 0, first waits up to that long for the current run to end.
        """
        self.script(name)
        with self._lock:
            run = self._running.get(name)
        if run is not None and wait > 0:
            self._wait_summary(run, wait)
        current = None
        with self._lock:
            run = self._running.get(name)
            last = self._last.get(name)
        if run is not None and run.job is not None:
            current = self._entry(name, run.job.info(), run)
        return {"name": name, "running": current, "last": last}

    def lines(self, name: str) -> list[tuple[str, str]]:
        """The last lines of the current run, as ``(stream, line)``; ``[]`` if none runs."""
        with self._lock:
            run = self._running.get(name)
            return [] if run is None else list(run.lines)

    def wait_for_line(self, name: str, text: str, timeout: float) -> bool:
        """Wait until the script's current run printed a line containing *text*."""

        def seen() -> bool:
            run = self._running.get(name)
            return run is not None and any(text in line for _, line in run.lines)

        with self._changed:
            return self._changed.wait_for(seen, timeout)

    # -- stopping ------------------------------------------------------------

    def kill(self, name: str) -> dict[str, Any] | None:
        """Stop the script; return how its run ended, or ``None`` if it was not running.

        Waits for the child to be reaped: up to its ``kill_grace`` plus a few
        seconds (the summary says ``"stopping"`` if that was not enough).
        """
        self.script(name)
        with self._lock:
            run = self._running.get(name)
        if run is None or run.job is None:
            return None
        run.job.cancel()
        return self._wait_summary(run, run.script.config.kill_grace + 5.0)

    def kill_all(self) -> list[dict[str, Any]]:
        """Stop every script; return how each run ended, once all are reaped."""
        with self._lock:
            runs = list(self._running.values())
        self.bridge.cancel_all(KIND)
        grace = max((run.script.config.kill_grace for run in runs), default=0.0)
        deadline = time.monotonic() + grace + 5.0
        return [self._wait_summary(run, deadline - time.monotonic()) for run in runs]

    # -- internals -----------------------------------------------------------

    def _on_line(self, run: _Run, stream: str, line: str) -> None:
        # On the loop thread, for each line the script prints ("stdout" or
        # "stderr", the line without its newline).
        with self._changed:
            run.lines.append((stream, line))
            run.output_bytes[stream] = run.output_bytes.get(stream, 0) + len(line.encode()) + 1
            self._changed.notify_all()

    def _finished(self, run: _Run) -> None:
        # On the loop thread (or the shutdown thread) once the job is done.
        assert run.job is not None
        with self._lock:
            lines = list(run.lines)
            truncated = max(run.output_bytes.values()) > MAX_OUTPUT
        summary = _summarize(run, run.job, lines, truncated)
        with self._changed:
            run.summary = summary
            self._last[run.script.name] = summary
            if self._running.get(run.script.name) is run:
                del self._running[run.script.name]
            self._changed.notify_all()

    def _wait_summary(self, run: _Run, timeout: float) -> dict[str, Any]:
        with self._changed:
            self._changed.wait_for(lambda: run.summary is not None, max(timeout, 0.0))
            if run.summary is not None:
                return run.summary
        return {"name": run.script.name, "outcome": None, "ended": "stopping"}

    def _entry(self, name: str, info: JobInfo, run: _Run | None) -> dict[str, Any]:
        now = time.time()
        since = info.started_at if info.started_at is not None else info.submitted_at
        last_line = None
        if run is not None:
            with self._lock:
                last_line = run.lines[-1][1] if run.lines else None
        return {
            "name": name,
            "state": info.state.value,
            "pid": info.pid,
            "program": info.program,
            "age": round(now - since, 3),
            "time_left": None if info.deadline is None else round(info.deadline - now, 3),
            "last_line": last_line,
        }


def _summarize(
    run: _Run, job: Job[Any], lines: list[tuple[str, str]], truncated: bool
) -> dict[str, Any]:
    """The record of a finished run (called once the job is done).

    *lines* are the last lines it printed, *truncated* whether it printed more
    than the bridge keeps (for a run that has no result to say so).
    """
    info = job.info()
    summary: dict[str, Any] = {
        "name": run.script.name,
        "pid": info.pid,
        "outcome": info.outcome,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "returncode": None,
        "truncated": truncated,
    }
    try:
        result = job.result()  # done: does not wait; retrieves a failure
    except JobTimeout as exc:
        ended = f"timed out after {run.script.config.timeout} s: {exc}"
    except JobCancelled as exc:
        ended = f"stopped: {exc}" if info.started_at is not None else "cancelled before it started"
    except Exception as exc:  # noqa: BLE001 (could not start: OSError; any failure is recorded)
        ended = f"failed: {type(exc).__name__}: {exc}"
    else:
        summary.update(
            returncode=result.returncode,
            duration=round(result.duration, 3),
            truncated=bool(result.truncated),
            ended=_exit_sentence(result.returncode),
        )
        if not result.truncated:  # else the kept output is the head: use the lines
            summary.update(stdout=_tail(_text(result.stdout)), stderr=_tail(_text(result.stderr)))
            return summary
        ended = summary["ended"]
    summary["stdout"] = _tail("".join(f"{t}\n" for s, t in lines if s != "stderr"))
    summary["stderr"] = _tail("".join(f"{t}\n" for s, t in lines if s == "stderr"))
    summary["ended"] = ended
    return summary


def _exit_sentence(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"terminated by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"terminated by signal {-returncode}"


def _wait_for_pid(job: Job[Any], timeout: float) -> JobInfo:
    """The job's snapshot once its child has a pid, it ended, or *timeout* passed.

    The bridge sets the pid on its loop thread a few milliseconds after the
    job starts, and has no event for it: a short bounded poll.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    info = job.info()
    while info.pid is None and not job.done() and time.monotonic() < deadline:
        pause.wait(0.005)
        info = job.info()
    return info


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _tail(text: str) -> str:
    return text[-TAIL_CHARS:]


# -- the Flask app -----------------------------------------------------------------


def create_app(
    token: str,
    *,
    scripts_dir: Path = SCRIPTS_DIR,
    config: Mapping[str, ScriptConfig] = SCRIPTS,
    max_running: int = 4,
) -> Flask:
    """The Flask app; its :class:`ScriptRunner` is ``app.extensions["script_runner"]``.

    Call ``runner.close()`` when done with the app: it shuts the bridge down
    and so stops every script still running.
    """
    if not token:
        raise ValueError("token must be a non-empty string")
    runner = ScriptRunner(load_allow_list(scripts_dir, config), max_running=max_running)
    app = Flask(__name__)
    app.extensions["script_runner"] = runner
    expected = f"Bearer {token}".encode()

    @app.before_request
    def require_token() -> tuple[Response, int, dict[str, str]] | None:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, expected):
            return None
        return _error("missing or wrong token", 401), 401, {"WWW-Authenticate": "Bearer"}

    @app.errorhandler(UnknownScript)
    def unknown(exc: UnknownScript) -> tuple[Response, int]:
        return _error(f"no script named {exc.args[0]!r} in the allow-list", 404), 404

    @app.get("/scripts")
    def list_scripts() -> Response:
        busy = {entry["name"] for entry in runner.running()}
        return jsonify(
            [
                {
                    "name": s.name,
                    "timeout": s.config.timeout,
                    "kill_grace": s.config.kill_grace,
                    "running": s.name in busy,
                }
                for s in runner.scripts.values()
            ]
        )

    @app.post("/scripts/<name>")
    def start(name: str) -> tuple[Response, int]:
        try:
            entry = runner.start(name)
        except AlreadyRunning as exc:
            body = {"error": str(exc), "status": 409, "name": name, "pid": exc.pid}
            return jsonify(body), 409
        return jsonify(entry), 202

    @app.get("/scripts/<name>")
    def status(name: str) -> Response:
        wait = min(max(request.args.get("wait", 0.0, type=float) or 0.0, 0.0), MAX_WAIT)
        return jsonify(runner.status(name, wait))

    @app.post("/scripts/<name>/kill")
    def kill(name: str) -> tuple[Response, int]:
        summary = runner.kill(name)
        if summary is None:
            return _error(f"script {name!r} is not running", 409), 409
        return jsonify(summary), 200

    @app.get("/running")
    def running() -> Response:
        return jsonify(runner.running())

    @app.post("/kill-all")
    def kill_all() -> Response:
        return jsonify(runner.kill_all())

    return app


def _error(message: str, status: int) -> Response:
    return jsonify({"error": message, "status": status})
