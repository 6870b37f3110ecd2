"""pytest fixtures for ambit system tests (see docs/testing.md).

`topo`: a fresh Topology per test, always torn down (also when the test
fails); `bins`: pathlib.Path of the built programs (env AMBIT_BIN, default
<repo>/build/bin).  Namespaces need root: without it the session fails with
a clear message instead of skipping tests silently.  A hung test fails after
AMBIT_TEST_TIMEOUT seconds (default 600; @pytest.mark.timeout(N) per test)
instead of hanging `make test`.
"""

import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import topology  # noqa: E402


DEFAULT_TIMEOUT = float(os.environ.get("AMBIT_TEST_TIMEOUT", "600"))


TestTimeout = topology.TestTimeout


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "timeout(seconds): fail the test if its setup or call takes longer"
    )


def _timeout_of(item):
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return float(m.args[0])
    return DEFAULT_TIMEOUT


def _with_alarm(item, what):
    """Context for one phase: SIGALRM after the item's timeout raises
    TestTimeout in the main thread (where pytest runs the test), which
    interrupts blocking waits; subprocess.run then kills its child."""
    secs = _timeout_of(item)
    if secs <= 0 or threading.current_thread() is not threading.main_thread():
        return None

    def on_alarm(signum, frame):
        raise TestTimeout(f"{what} of {item.nodeid} exceeded {secs:g}s (AMBIT_TEST_TIMEOUT / mark.timeout)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, secs)
    return old


def _clear_alarm(old):
    if old is not None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    old = _with_alarm(item, "setup")
    try:
        yield
    finally:
        _clear_alarm(old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    old = _with_alarm(item, "call")
    try:
        yield
    finally:
        _clear_alarm(old)


def pytest_sessionstart(session):
    if os.geteuid() != 0:
        raise pytest.UsageError(
            "ambit system tests need root: they create network namespaces, "
            "bridges and veths (never in the root netns). Run as root, e.g. "
            "`sudo make test`."
        )
    swept = topology.sweep_stale()
    if swept:
        print(f"\nsystem tests: removed leftovers of dead runs {' '.join(swept)}")


@pytest.fixture(scope="session")
def bins():
    """Directory of the built binaries (AMBIT_BIN or <repo>/build/bin)."""
    return topology._default_bins()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # A failed test: attach its tracked processes' logs to the report (the
    # temp dir holding them disappears at teardown).
    t = getattr(item, "funcargs", {}).get("topo")
    if rep.failed and rep.when == "call" and isinstance(t, topology.Topology):
        for p in t.procs:
            log = t.log(p)
            if log:
                args = " ".join(str(a) for a in p.args)[:300]
                rep.sections.append((f"process {p.pid} log", f"$ {args}\n{log[-4000:]}"))


@pytest.fixture
def topo(bins):
    """A Topology for one test; torn down afterwards whatever happened.
    When the test failed, the logs of its tracked processes are attached
    to the report."""
    t = topology.Topology(bins=bins)
    try:
        yield t
    finally:
        t.teardown()
        if t.errors:
            warnings.warn(f"topology teardown ({t.prefix}): " + "; ".join(t.errors))
