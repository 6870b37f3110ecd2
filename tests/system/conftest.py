"""pytest fixtures for ambit system tests (see docs/testing.md).

`topo`: a fresh Topology per test, always torn down (also when the test
fails); `bins`: pathlib.Path of the built programs (env AMBIT_BIN, default
<repo>/build/bin).  Namespaces need root: without it the session fails with
a clear message instead of skipping tests silently.
"""

import os
import sys
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import topology  # noqa: E402


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
