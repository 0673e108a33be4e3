"""The configurator against the real Samba AD DC: computer objects created with samba-tool
(and put in the configured group) appear in ValidPorts within a shortened interval, deleted
ones disappear (new connections get 503, live ones continue), static entries survive, and the
last good list is kept when the directory fails and served after a restart.

The computer is named LOCALHOST, so that its NetBIOS entry `LOCALHOST:<port>` allows the
target `localhost:<port>`, which resolves to the gateway's own endpoint."""

import os
import signal
import subprocess
import time

import pytest
from impacket.dcerpc.v5 import mgmt, transport
from impacket.http import AUTH_BASIC

from conftest import Gateway

GROUP = "RPC Servers"
COMPUTER = "LOCALHOST"
# Any endpoint port: the Gateway helper picks free ports, which change across a restart.
PORTS = "1024-65535"


def samba_tool(dc, *args, check=True):
    return subprocess.run(["samba-tool", *args, "-s", str(dc.config)], check=check,
                          capture_output=True, text=True, timeout=120)


def connect(gw):
    rpc = transport.DCERPCTransportFactory(f"ncacn_http:localhost[{gw.endpoint_port}]")
    rpc.set_rpc_proxy_url(gw.proxy_url(False))
    # impacket's NTLM mode waits for a 401 that an anonymous listener never sends.
    rpc.set_credentials("anyone", "anything")
    rpc.set_auth_type(AUTH_BASIC)
    dce = rpc.get_dce_rpc()
    dce.connect()
    dce.bind(mgmt.MSRPC_UUID_MGMT)
    return dce


def inq(dce):
    resp = mgmt.hinq_if_ids(dce)
    assert resp["status"] == 0
    return len(resp["if_id_vector"]["if_id"])


def valid_ports(binary, gw):
    return subprocess.run([str(binary), "validports", "--config", str(gw.config)],
                          check=True, capture_output=True, text=True).stdout


def wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def configurator_section(dc, tmp, port, url="ldaps://localhost"):
    suffix = dc.realm.lower()
    base_dn = ",".join(f"DC={part}" for part in suffix.split("."))
    password_file = tmp / "ldap-password"
    password_file.write_text(dc.password + "\n")
    return f"""
[configurator]
url = "{url}"
ca_file = "{dc.tls_ca}"
bind_dn = "{dc.admin}@{suffix}"
password_file = "{password_file}"
base_dn = "{base_dn}"
group = "{GROUP}"
ports = "{port}"
interval_secs = 1
timeout_secs = 5
"""


def test_configurator_follows_the_directory(rpcgate_binary, samba_dc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("configurator")
    samba_tool(samba_dc, "group", "add", GROUP, check=False)
    samba_tool(samba_dc, "computer", "delete", COMPUTER, check=False)
    extra = configurator_section(samba_dc, tmp, PORTS)
    gw = Gateway(rpcgate_binary, tmp, valid_ports="static1:6001;127.0.0.1:1",
                 extra_config=extra)
    try:
        # Not in the group yet: localhost is not allowed.
        with pytest.raises(Exception):
            connect(gw)
        samba_tool(samba_dc, "computer", "create", COMPUTER)
        samba_tool(samba_dc, "group", "addmembers", GROUP, COMPUTER + "$")
        wait_for(lambda: f"LOCALHOST:{PORTS}" in gw.log_text())
        listed = valid_ports(rpcgate_binary, gw)
        assert "static1" in listed and "config file" in listed
        assert "LOCALHOST" in listed and "directory configurator" in listed
        live = connect(gw)
        assert inq(live) >= 2

        # Deleted: the entries go, a new connection is refused, the live one continues.
        samba_tool(samba_dc, "computer", "delete", COMPUTER)
        wait_for(lambda: "removed: " in gw.log_text() and "LOCALHOST" not in
                 valid_ports(rpcgate_binary, gw))
        with pytest.raises(Exception) as refused:
            connect(gw)
        assert "503" in str(refused.value) or "6ba" in str(refused.value).lower(), refused.value
        assert inq(live) >= 2
        assert "static1" in valid_ports(rpcgate_binary, gw)

        # Back again, then the directory "stops" (SIGHUP to an unreachable URL): the last good
        # list is kept and the error logged.
        samba_tool(samba_dc, "computer", "create", COMPUTER)
        samba_tool(samba_dc, "group", "addmembers", GROUP, COMPUTER + "$")
        wait_for(lambda: "LOCALHOST" in valid_ports(rpcgate_binary, gw))
        wait_for(lambda: _try(gw))
        text = gw.config.read_text().replace('url = "ldaps://localhost"',
                                             'url = "ldaps://localhost:1"')
        gw.config.write_text(text)
        gw.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "keeping the last good list" in gw.log_text())
        assert "SIGHUP: config reloaded" in gw.log_text()
        assert inq(connect(gw)) >= 2
    finally:
        gw.stop()

    # Restart with the directory down: the persisted list is served.
    gw2 = Gateway(rpcgate_binary, tmp, valid_ports="static1:6001;127.0.0.1:1",
                  extra_config=configurator_section(samba_dc, tmp, PORTS,
                                                    url="ldaps://localhost:1"))
    try:
        wait_for(lambda: "keeping the last good list" in gw2.log_text())
        assert inq(connect(gw2)) >= 2
        assert "loaded the last good directory list" in gw2.log_text()
    finally:
        gw2.stop()
        samba_tool(samba_dc, "computer", "delete", COMPUTER, check=False)


def _try(gw):
    try:
        connect(gw).disconnect()
        return True
    except Exception:
        return False
