"""Fixtures for the interop suite: a real rpcgate process started on free loopback ports.

The gateway runs from the workspace's debug build (built once per session), with a config
written into a temporary directory: an HTTPS and a plain-HTTP proxy listener, and an endpoint
on 127.0.0.1 and ::1 in front of the built-in demo service. Its log is printed when a test
fails, so a failure can be diagnosed without a rerun.
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "target" / "debug" / "rpcgate"


def free_port(families=(socket.AF_INET, socket.AF_INET6)):
    """A port free on every given loopback family at once."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if socket.AF_INET6 in families:
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def wait_for_port(port, host="127.0.0.1", timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


@pytest.fixture(scope="session")
def rpcgate_binary():
    subprocess.run(
        ["cargo", "build", "--locked", "-p", "rpcgate", "--bin", "rpcgate"],
        cwd=ROOT,
        check=True,
    )
    assert BINARY.exists(), BINARY
    return BINARY


class Gateway:
    """A running `rpcgate serve` and the ports it listens on."""

    def __init__(self, binary, tmp):
        self.https_port = free_port((socket.AF_INET,))
        self.http_port = free_port((socket.AF_INET,))
        self.endpoint_port = free_port()
        self.state_dir = tmp / "state"
        self.config = tmp / "rpcgate.toml"
        self.log_path = tmp / "rpcgate.log"
        self.config.write_text(
            f"""
state_dir = "{self.state_dir}"

[log]
level = "debug"

[proxy]
valid_ports = "localhost:{self.endpoint_port};127.0.0.1:{self.endpoint_port}"

[[proxy.listener]]
address = "127.0.0.1:{self.https_port}"
tls = true

[[proxy.listener]]
address = "127.0.0.1:{self.http_port}"
tls = false

[[endpoint]]
listen = ["127.0.0.1:{self.endpoint_port}", "[::1]:{self.endpoint_port}"]
backend = "demo"

[demo]
listen = "127.0.0.1:0"
"""
        )
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        for port in (self.https_port, self.http_port, self.endpoint_port):
            wait_for_port(port)

    def proxy_url(self, tls):
        if tls:
            return f"https://127.0.0.1:{self.https_port}/rpc/rpcproxy.dll"
        return f"http://127.0.0.1:{self.http_port}/rpc/rpcproxy.dll"

    def log_text(self):
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def gateway(rpcgate_binary, tmp_path_factory):
    gw = Gateway(rpcgate_binary, tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the gateway's log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        gw = item.funcargs.get("gateway")
        if gw is not None:
            report.sections.append(("rpcgate log (last 200 lines)", "\n".join(gw.log_text().splitlines()[-200:])))
