"""A farm without affinity: real HAProxy (Debian's haproxy) round-robin in front of two rpcgate
proxies, and one rpcgate endpoint with the demo service behind them, driven by impacket.

HAProxy runs docs/deploy/haproxy.cfg, the example shipped to users, with only its addresses,
ports, certificate paths and log target replaced, so that the example stays tested:

    impacket --HTTPS--> HAProxy --HTTPS, round-robin--> rpcgate proxy A --TCP--> rpcgate
                                                   \\-> rpcgate proxy B --TCP--/  endpoint + demo

Each virtual connection sends its RPC_IN_DATA and its RPC_OUT_DATA as two HTTP requests, so
round-robin puts the IN channel on one proxy and the OUT channel on the other: the "split"
that breaks Exchange's DSProxy. The test reads each proxy's own log (`vc=<cookie>` on its
"IN channel opened" / "OUT channel opened" lines), asserts that splits happened and that every
call of every virtual connection succeeded anyway. A second test switches on the optional
affinity lines of the example (hash of the virtual-connection cookie in the request body) and
asserts that no virtual connection is split.
"""

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from impacket.dcerpc.v5 import mgmt, transport
from impacket.http import AUTH_BASIC

from conftest import ROOT, free_port

SHIPPED_CONFIG = ROOT / "docs" / "deploy" / "haproxy.cfg"
# Debian installs it in /usr/sbin, which a non-root PATH may lack.
HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
VIRTUAL_CONNECTIONS = 24
CALLS_PER_CONNECTION = 3

pytestmark = pytest.mark.timeout(120)


def wait_listening(process, port, log_path, timeout=30.0):
    """Waits until `port` accepts connections; fails at once, with the log, if `process`
    exits first (a config HAProxy or rpcgate refuses, a file-descriptor limit, ...)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"{process.args[0]} exited with {process.returncode}:\n"
                f"{Path(log_path).read_text(errors='replace')}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Rpcgate:
    """One `rpcgate serve` process with the given config, its log in a file."""

    def __init__(self, binary, directory, name, config, ports):
        directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.config_path = directory / f"{name}.toml"
        self.config_path.write_text(config)
        self.log_path = directory / f"{name}.log"
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [str(binary), "serve", "--config", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "NO_COLOR": "1"},
        )
        for port in ports:
            wait_listening(self.process, port, self.log_path)

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


class Farm:
    """An rpcgate endpoint (demo service, no proxy) and two rpcgate proxies (no endpoint)."""

    def __init__(self, binary, directory):
        self.directory = directory
        self.endpoint_port = free_port((socket.AF_INET,))
        state = directory / "state"
        self.endpoint = Rpcgate(
            binary,
            directory,
            "endpoint",
            f"""
state_dir = "{directory / 'state-endpoint'}"

[log]
level = "info"

[[endpoint]]
listen = "127.0.0.1:{self.endpoint_port}"
backend = "demo"

[demo]
listen = "127.0.0.1:0"
""",
            [self.endpoint_port],
        )
        self.proxies = {}
        self.proxy_ports = {}
        # Started one after the other: the first generates the self-signed certificate into
        # the shared state directory, the second reuses it, and HAProxy trusts that one.
        for name in ("proxy-a", "proxy-b"):
            port = free_port((socket.AF_INET,))
            self.proxy_ports[name] = port
            self.proxies[name] = Rpcgate(
                binary,
                directory,
                name,
                f"""
state_dir = "{state}"

[log]
level = "info"

[proxy]
valid_ports = "localhost:{self.endpoint_port}"

[[proxy.listener]]
address = "127.0.0.1:{port}"
tls = true
""",
                [port],
            )
        self.ca = state / "cert.pem"
        # HAProxy's "crt" wants the certificate and its key in one file.
        self.front_pem = directory / "front.pem"
        self.front_pem.write_text(self.ca.read_text() + (state / "key.pem").read_text())

    def all_logs(self):
        parts = []
        for process in (self.endpoint, *self.proxies.values()):
            tail = "\n".join(process.log_text().splitlines()[-60:])
            parts.append(f"--- {process.name} log (last 60 lines) ---\n{tail}")
        return "\n".join(parts)

    def stop(self):
        for process in (*self.proxies.values(), self.endpoint):
            process.stop()


def replace_once(text, old, new):
    """`text` with the single occurrence of `old` replaced: fails if the shipped example no
    longer has that line, so that a change to the example cannot silently skip a test."""
    assert text.count(old) == 1, f"docs/deploy/haproxy.cfg: expected exactly one {old!r}"
    return text.replace(old, new)


def haproxy_config(farm, front_port, affinity):
    """docs/deploy/haproxy.cfg for this farm: loopback addresses, test certificates, log to
    stderr; with `affinity`, its commented affinity lines replace `balance roundrobin`."""
    text = SHIPPED_CONFIG.read_text()
    text = replace_once(text, "log /dev/log local0", "log stderr format short local0")
    text = replace_once(
        text,
        "bind :443 ssl crt /etc/haproxy/certs/mail.contoso.com.pem",
        f"bind 127.0.0.1:{front_port} ssl crt {farm.front_pem}",
    )
    text = replace_once(text, "ca-file /etc/haproxy/rpcgate-ca.pem", f"ca-file {farm.ca}")
    # rpcgate's self-signed certificate names localhost and the loopback addresses.
    text = replace_once(text, "verifyhost rpc-farm.contoso.com", "verifyhost localhost")
    text = replace_once(
        text, "server rpcgate1 192.0.2.11:443", f"server rpcgate1 127.0.0.1:{farm.proxy_ports['proxy-a']}"
    )
    text = replace_once(
        text, "server rpcgate2 192.0.2.12:443", f"server rpcgate2 127.0.0.1:{farm.proxy_ports['proxy-b']}"
    )
    if affinity:
        lines = re.findall(r"^\s*# affinity: (.*)$", text, flags=re.MULTILINE)
        assert len(lines) == 2, lines
        text = replace_once(
            text, "    balance roundrobin\n", "".join(f"    {line}\n" for line in lines)
        )
    return text


class HAProxy:
    def __init__(self, farm, affinity):
        self.port = free_port((socket.AF_INET,))
        name = "haproxy-affinity" if affinity else "haproxy"
        self.config_path = farm.directory / f"{name}.cfg"
        self.config_path.write_text(haproxy_config(farm, self.port, affinity))
        check = subprocess.run(
            [HAPROXY, "-c", "-f", str(self.config_path)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stdout + check.stderr
        self.log_path = farm.directory / f"{name}.log"
        self.log = open(self.log_path, "w")
        # -db: stay in the foreground; -W would add a master process we do not need.
        self.process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_listening(self.process, self.port, self.log_path)

    def url(self):
        return f"https://127.0.0.1:{self.port}/rpc/rpcproxy.dll"

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
def farm(rpcgate_binary, tmp_path_factory):
    if HAPROXY is None:
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (scripts/test-all setup installs it)")
        pytest.skip("haproxy is not installed (scripts/test-all setup installs it)")
    farm = Farm(rpcgate_binary, tmp_path_factory.mktemp("farm"))
    yield farm
    farm.stop()


def run_virtual_connections(farm, haproxy, count):
    """`count` virtual connections through HAProxy, each binding mgmt and calling inq_if_ids;
    returns the number of calls that succeeded."""
    calls = 0
    for _ in range(count):
        rpc = transport.DCERPCTransportFactory(f"ncacn_http:localhost[{farm.endpoint_port}]")
        rpc.set_rpc_proxy_url(haproxy.url())
        rpc.set_credentials("farm-user", "any password")  # anonymous loopback listeners
        rpc.set_auth_type(AUTH_BASIC)
        dce = rpc.get_dce_rpc()
        dce.connect()
        try:
            dce.bind(mgmt.MSRPC_UUID_MGMT)
            for _ in range(CALLS_PER_CONNECTION):
                answer = mgmt.hinq_if_ids(dce)
                assert answer["status"] == 0
                assert answer["if_id_vector"]["count"] >= 2
                calls += 1
        finally:
            dce.disconnect()
    return calls


CHANNEL_LINE = re.compile(r"vc=([0-9a-f-]{36})\}?: .*\b(IN|OUT) channel opened")


def channels_by_vc(farm):
    """{vc: {"IN": proxy name, "OUT": proxy name}} from the proxies' own logs."""
    seen = {}
    for name, process in farm.proxies.items():
        for match in CHANNEL_LINE.finditer(process.log_text()):
            vc, direction = match.groups()
            where = seen.setdefault(vc, {})
            assert direction not in where, f"{direction} channel of {vc} opened twice"
            where[direction] = name
    return seen


def paired_at_endpoint(farm):
    return set(re.findall(r"vc\{vc=([0-9a-f-]{36})\}: \S+: virtual connection paired", farm.endpoint.log_text()))


def run_through(farm, affinity):
    """Runs the virtual connections through a fresh HAProxy; returns (new vcs, haproxy log)."""
    before = set(channels_by_vc(farm))
    haproxy = HAProxy(farm, affinity)
    try:
        started = time.monotonic()
        calls = run_virtual_connections(farm, haproxy, VIRTUAL_CONNECTIONS)
        took = time.monotonic() - started
        assert calls == VIRTUAL_CONNECTIONS * CALLS_PER_CONNECTION
        # Let the proxies write their last lines.
        time.sleep(0.3)
        log = haproxy.log_text()
    except Exception as error:
        raise AssertionError(
            f"{error}\n--- haproxy log ---\n{haproxy.log_text()}\n{farm.all_logs()}"
        ) from error
    finally:
        haproxy.stop()
    channels = {vc: where for vc, where in channels_by_vc(farm).items() if vc not in before}
    print(
        f"{VIRTUAL_CONNECTIONS} virtual connections, {calls} calls in {took:.2f} s "
        f"({'affinity' if affinity else 'round-robin'})"
    )
    return channels, log


def test_round_robin_without_affinity_splits_channels_and_every_call_succeeds(farm):
    channels, haproxy_log = run_through(farm, affinity=False)
    diagnostics = f"\n--- haproxy log ---\n{haproxy_log}\n{farm.all_logs()}"
    assert len(channels) == VIRTUAL_CONNECTIONS, f"{channels}{diagnostics}"
    assert all(set(where) == {"IN", "OUT"} for where in channels.values()), diagnostics
    split = [vc for vc, where in channels.items() if where["IN"] != where["OUT"]]
    print(f"split virtual connections: {len(split)} of {len(channels)}")
    assert len(split) >= 3, f"only {len(split)} split virtual connections{diagnostics}"
    # The endpoint paired each split virtual connection from legs of two proxies.
    assert set(split) <= paired_at_endpoint(farm), diagnostics
    # Both proxies passed HAProxy's health check (an MS-RPCH echo request) throughout.
    assert " is DOWN" not in haproxy_log, haproxy_log


def test_optional_affinity_keeps_both_channels_on_one_proxy(farm):
    channels, haproxy_log = run_through(farm, affinity=True)
    diagnostics = f"\n--- haproxy log ---\n{haproxy_log}\n{farm.all_logs()}"
    assert len(channels) == VIRTUAL_CONNECTIONS, f"{channels}{diagnostics}"
    split = [vc for vc, where in channels.items() if where["IN"] != where["OUT"]]
    assert split == [], diagnostics
    # The hash spreads virtual connections over both proxies (24 random cookies on one
    # proxy would be a 2**-23 coincidence).
    assert {where["IN"] for where in channels.values()} == {"proxy-a", "proxy-b"}, diagnostics
    assert " is DOWN" not in haproxy_log, haproxy_log
