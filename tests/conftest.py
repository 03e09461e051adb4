from __future__ import annotations

import threading

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files; review the diff")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True)
def no_leaked_threads():
    """Fail a test that leaves a non-daemon thread running: every thread must stop cleanly."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    for thread in leaked:
        thread.join(timeout=5)
    still = [t.name for t in leaked if t.is_alive()]
    assert not still, f"threads left running: {still}"


@pytest.fixture(params=["sqlite", "postgresql"])
def receiver_db(request: pytest.FixtureRequest, tmp_path):
    """The receiver's store, each test once per kind: a SQLite file, then a fresh PostgreSQL schema (tests/pg.py;
    skipped with a message where no server answers)."""
    if request.param == "sqlite":
        yield tmp_path / "archive.db"
        return
    from tests.pg import fresh_schema

    with fresh_schema() as url:
        yield url
