"""The status listener as its real consumers see it, while impacket holds a virtual connection
open through the gateway:

- Prometheus' own `promtool check metrics` (Debian's prometheus package) lints /metrics;
- /status.json and the page list impacket's channels and the virtual connection;
- SIGTERM stops `rpcgate serve` cleanly: every connection and listener closed, exit status 0.
"""

import json
import shutil
import socket
import subprocess
import urllib.request

import pytest
from impacket.dcerpc.v5 import mgmt

from conftest import Gateway, free_port
from test_impacket_demo import v2_dce


def promtool():
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (scripts/test-all setup installs prometheus)")
    return path


@pytest.fixture
def status_gateway(rpcgate_binary, tmp_path):
    port = free_port((socket.AF_INET,))
    gw = Gateway(
        rpcgate_binary,
        tmp_path,
        extra_config=f'\n[status]\nlisten = "127.0.0.1:{port}"\n',
    )
    gw.status_url = f"http://127.0.0.1:{port}"
    yield gw
    if gw.process.poll() is None:
        gw.stop()


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.headers.get("Content-Type"), response.read().decode()


def test_metrics_pass_promtool_and_the_page_lists_impackets_connection(status_gateway):
    gw = status_gateway
    dce = v2_dce(gw, tls=True)
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        assert mgmt.hinq_stats(dce)["status"] == 0

        status, content_type, metrics = get(gw.status_url + "/metrics")
        assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
        lint = subprocess.run(
            [promtool(), "check", "metrics"], input=metrics, capture_output=True, text=True
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
        assert "rpcgate_proxy_channels_active 2" in metrics.splitlines()

        _, _, text = get(gw.status_url + "/status.json")
        live = json.loads(text)["live"]
        kinds = sorted(entry["kind"] for entry in live)
        assert kinds == ["IN channel", "OUT channel", "virtual connection"], live
        assert len({entry["vc"] for entry in live}) == 1
        assert all(entry["bytes_to_server"] > 0 for entry in live if entry["kind"] != "OUT channel")

        _, content_type, page = get(gw.status_url + "/")
        assert content_type.startswith("text/html")
        assert live[0]["vc"] in page
    finally:
        dce.disconnect()


def test_sigterm_stops_the_gateway_cleanly_with_a_connection_open(status_gateway):
    gw = status_gateway
    dce = v2_dce(gw, tls=False)
    dce.bind(mgmt.MSRPC_UUID_MGMT)
    gw.process.terminate()
    assert gw.process.wait(timeout=10) == 0
    log = gw.log_text()
    assert "terminated; stopping" in log and "closing every connection" in log
    assert "INFO rpcgate::serve: stopped" in log, log[-2000:]
    # Every listener is closed. (impacket itself does not notice a closed OUT channel: its
    # next call would wait for ever, so none is made.)
    for port in (gw.https_port, gw.http_port, gw.endpoint_port):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
