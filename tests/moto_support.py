"""A real moto server (AWS over HTTP, in a thread of the test process) for tests of AWS code.

``with moto_server() as endpoint:`` starts :class:`moto.server.ThreadedMotoServer`
on a free loopback port, resets moto's state, yields ``http://127.0.0.1:PORT``
and stops the server.  ``aws_env(endpoint)`` is the environment that points boto3
at it with dummy credentials: boto3 honours ``AWS_ENDPOINT_URL`` natively, so the
code under test builds its clients as it would in production.  Apply it with
``monkeypatch.setenv`` (in-process) or pass it to a subprocess::

    with moto_environment(monkeypatch) as endpoint:
        ...

moto keeps its state per process, shared by every server and ``mock_aws`` in
it, so a new server starts from a reset: run one at a time in a process.

Imported as ``tests.moto_support`` (the repo root is on ``pythonpath``).
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFAULT_REGION = "us-east-1"
DUMMY_KEY = "testing"  # moto accepts any credentials; these only stop boto3 looking for real ones


@contextmanager
def moto_server(quiet: bool = True) -> Iterator[str]:
    """Run a moto server on a free loopback port; yield its endpoint URL.

    The port is picked by the kernel at bind time (port 0), so two test
    processes never race for one (a lost race would hang ``start()``: moto
    reports bind errors only in its thread).  ``quiet`` hides werkzeug's line
    per request while the server runs.
    """
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    if quiet:
        werkzeug.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(reset, timeout=10) as resp:
            resp.read()
        yield endpoint
    finally:
        server.stop()
        werkzeug.setLevel(level)


def aws_env(endpoint: str, region: str = DEFAULT_REGION) -> dict[str, str]:
    """Environment variables that send boto3 (and the AWS CLI) to ``endpoint`` with dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": DUMMY_KEY,
        "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
        "AWS_DEFAULT_REGION": region,
    }


@contextmanager
def moto_environment(monkeypatch: Any, region: str = DEFAULT_REGION) -> Iterator[str]:
    """A moto server with this process's AWS environment (:func:`aws_env`) pointed at it."""
    with moto_server() as endpoint:
        for name, value in aws_env(endpoint, region).items():
            monkeypatch.setenv(name, value)
        yield endpoint
