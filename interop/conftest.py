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

    def __init__(self, binary, tmp, endpoints=("demo",), valid_ports=None, listener_auth=None,
                 extra_config="", env=None, proxy_extra=""):
        """`endpoints`: one backend per endpoint ("demo" or "host:port"), each endpoint on a
        free port of 127.0.0.1 and ::1 (`endpoint_ports`, in order; `endpoint_port` is the
        first). `valid_ports`: the proxy's ValidPorts string; by default every endpoint as
        localhost:PORT and 127.0.0.1:PORT. `listener_auth`: the `auth` methods of both
        listeners (e.g. ["ntlm", "basic"]; default: anonymous). `extra_config`: TOML appended
        to the file (e.g. an [auth] section). `env`: extra environment variables.
        `proxy_extra`: keys added to the [proxy] section."""
        self.https_port = free_port((socket.AF_INET,))
        self.http_port = free_port((socket.AF_INET,))
        self.endpoint_ports = []
        while len(self.endpoint_ports) < len(endpoints):
            port = free_port()
            if port not in self.endpoint_ports + [self.https_port, self.http_port]:
                self.endpoint_ports.append(port)
        self.endpoint_port = self.endpoint_ports[0]
        if valid_ports is None:
            valid_ports = ";".join(
                f"localhost:{port};127.0.0.1:{port}" for port in self.endpoint_ports
            )
        endpoint_sections = "".join(
            f"""
[[endpoint]]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
backend = "{backend}"
"""
            for port, backend in zip(self.endpoint_ports, endpoints)
        )
        self.state_dir = tmp / "state"
        self.config = tmp / "rpcgate.toml"
        self.log_path = tmp / "rpcgate.log"
        auth_line = ""
        if listener_auth is not None:
            auth_line = "auth = [" + ", ".join(f'"{m}"' for m in listener_auth) + "]"
        self.config.write_text(
            f"""
state_dir = "{self.state_dir}"

[log]
level = "debug"

[proxy]
valid_ports = "{valid_ports}"
{proxy_extra}

[[proxy.listener]]
address = "127.0.0.1:{self.https_port}"
tls = true
{auth_line}

[[proxy.listener]]
address = "127.0.0.1:{self.http_port}"
tls = false
{auth_line}
{endpoint_sections}
[demo]
listen = "127.0.0.1:0"
{extra_config}
"""
        )
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1", **(env or {})},
        )
        for port in (self.https_port, self.http_port, *self.endpoint_ports):
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


@pytest.fixture(scope="session")
def samba_dc(tmp_path_factory):
    """A Samba AD DC provisioned for this session (interop/samba_dc.py), on loopback.

    Skipped where Samba's AD DC packages are missing or the suite does not run as root,
    except under CI (CI=true), where scripts/test-all setup must have installed them."""
    import samba_dc as samba

    missing = None
    if not samba.installed():
        missing = "Samba's AD DC packages are not installed (scripts/test-all setup)"
    elif os.geteuid() != 0:
        missing = "a Samba AD DC needs root"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    dc = samba.SambaDC(tmp_path_factory.mktemp("samba-dc"))
    dc.provision()
    dc.start()
    print(f"Samba AD DC: provisioned in {dc.provision_seconds:.1f} s, "
          f"started in {dc.start_seconds:.1f} s, RPC ports {dc.ports}")
    yield dc
    dc.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the logs of the gateways and the Samba DC a failing test used to its report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name, value in item.funcargs.items():
            if isinstance(value, Gateway):
                title = "rpcgate log" if name == "gateway" else f"rpcgate log ({name})"
                report.sections.append((f"{title} (last 200 lines)",
                                        "\n".join(value.log_text().splitlines()[-200:])))
            elif type(value).__name__ == "SambaDC":
                report.sections.append(("Samba log (last 100 lines)", value.log_tail(100)))
