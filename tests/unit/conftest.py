"""The fast tier: pure functions only. A test here that opens a socket, a Dagster instance or a
DuckDB file fails, so the tier stays under a minute and never needs a server."""

import socket

import dagster as dg
import duckdb
import pytest


def _refuse(what: str):
    def refused(*args, **kwargs):
        raise AssertionError(f"the fast tier uses no {what}: move this test to tests/")

    return refused


@pytest.fixture(autouse=True)
def pure(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _refuse("network"))
    for name in ("get", "ephemeral", "local_temp"):
        monkeypatch.setattr(dg.DagsterInstance, name, _refuse("Dagster instance"))
    connect = duckdb.connect

    def memory_only(database: str = ":memory:", *args, **kwargs):
        if str(database) not in (":memory:", ""):
            raise AssertionError("the fast tier uses no DuckDB file: move this test to tests/")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(duckdb, "connect", memory_only)
