"""Shared fixtures of the pytest suites here (kserve_test.py, client_test.py, ...).

ctest runs them through run_pytest.sh, which sets STRATA_BUILD_DIR and STRATA_SOURCE_DIR and uses
the project's venv (scripts/python-env.sh). One small model is trained per session.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import strata_server  # noqa: E402


@pytest.fixture(scope="session")
def build_dir():
    return os.environ["STRATA_BUILD_DIR"]


@pytest.fixture(scope="session")
def source_dir():
    return os.environ["STRATA_SOURCE_DIR"]


@pytest.fixture(scope="session")
def bundle(build_dir, source_dir, tmp_path_factory):
    return strata_server.train_bundle(build_dir, source_dir,
                                      str(tmp_path_factory.mktemp("model") / "model.bundle"))


@pytest.fixture(scope="session")
def text_bundle(build_dir, source_dir, tmp_path_factory):
    """A small text model (strata_server.TRAIN_TEXTS over all-MiniLM-L6-v2; up to 200 bytes)."""
    return strata_server.train_text_bundle(
        build_dir, source_dir, str(tmp_path_factory.mktemp("text") / "text.bundle"))


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return strata_server.make_tls_certificate(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture
def start_server(build_dir, bundle):
    """Starts a strata-server with extra flags (waiting for SERVING); stops them all at the end."""
    servers = []

    def start(*flags, env=None, health_flags=()):
        server = strata_server.StrataServer(build_dir, bundle, *flags, env=env)
        servers.append(server)
        return server.wait_serving(*health_flags)

    yield start
    for server in servers:
        assert server.stop() == 0, server.log()
