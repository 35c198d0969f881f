"""The directory in a child process (examples/telephony_flow/services/directory_process.py).

Driven through its own API and plain HTTP requests; the child is checked with psutil.
"""

from __future__ import annotations

import socket

import httpx
import psutil
import pytest

from examples.telephony_flow.services.directory_process import DirectoryProcess


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


def test_directory_process_serves_counts_and_stops() -> None:
    before = _children()
    service = DirectoryProcess()
    url = service.start()
    try:
        assert url == service.url
        with pytest.raises(RuntimeError, match="already started"):
            service.start()
        assert url.startswith("http://127.0.0.1:")
        response = httpx.get(url + "/residents/999")
        assert response.status_code == 404
        stats = service.stats()
        assert (stats.requests, stats.connections) == (1, 1)
    finally:
        service.stop()
    assert service.stats().requests == 1  # the child's last counters
    service.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/residents/101")
    assert _children() <= before


def test_directory_process_on_a_taken_port_raises_and_leaves_no_child() -> None:
    before = _children()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = DirectoryProcess(port=port)
        with pytest.raises(OSError, match="did not start"):
            service.start()
    assert service.url == ""
    assert service.stats().requests == 0
    service.stop()
    assert _children() <= before
