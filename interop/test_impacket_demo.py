"""impacket, a real third-party MS-RPCH client, against rpcgate and its demo service.

- RPC over HTTP v2 through the proxy (HTTPS and plain HTTP) to the endpoint on localhost:PORT,
  bind to the DCE management interface and call inq_if_ids (and the other mgmt calls).
- RPC over HTTP v1: impacket's direct `ncacn_http:host[port]` transport to the endpoint.
"""

import pytest
from impacket.dcerpc.v5 import mgmt, transport
from impacket.dcerpc.v5.rpcrt import DCERPCException
from impacket.http import AUTH_BASIC
from impacket.uuid import bin_to_uuidtup

MGMT = ("AFA8BD80-7D8A-11C9-BEF4-08002B102989", "1.0")
RPCECHO = ("60A15EC5-4DE8-11D7-A637-005056A20182", "1.0")


def interfaces(dce):
    resp = mgmt.hinq_if_ids(dce)
    assert resp["status"] == 0
    found = set()
    for entry in resp["if_id_vector"]["if_id"]:
        found.add(bin_to_uuidtup(entry["Data"].getData()))
    return {(uuid.upper(), version) for uuid, version in found}


def v2_dce(gateway, tls):
    rpc = transport.DCERPCTransportFactory(f"ncacn_http:localhost[{gateway.endpoint_port}]")
    rpc.set_rpc_proxy_url(gateway.proxy_url(tls))
    # impacket's NTLM mode waits for a 401 an anonymous proxy never sends; Basic is sent at
    # once and ignored by an anonymous loopback listener.
    rpc.set_credentials("anonymous", "unused")
    rpc.set_auth_type(AUTH_BASIC)
    dce = rpc.get_dce_rpc()
    dce.connect()
    return dce


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_mgmt_inq_if_ids_through_the_proxy(gateway, tls):
    dce = v2_dce(gateway, tls)
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        assert interfaces(dce) >= {MGMT, RPCECHO}
        listening = mgmt.his_server_listening(dce)
        assert listening["status"] == 0
        stats = mgmt.hinq_stats(dce)
        assert stats["status"] == 0
    finally:
        dce.disconnect()
    log = gateway.log_text()
    assert "IN channel opened" in log and "OUT channel opened" in log


def test_several_calls_and_virtual_connections(gateway):
    for _ in range(3):
        dce = v2_dce(gateway, tls=True)
        try:
            dce.bind(mgmt.MSRPC_UUID_MGMT)
            for _ in range(5):
                assert interfaces(dce) >= {MGMT, RPCECHO}
        finally:
            dce.disconnect()


def test_target_not_in_valid_ports_is_refused_with_6ba(gateway):
    rpc = transport.DCERPCTransportFactory("ncacn_http:localhost[1]")
    rpc.set_rpc_proxy_url(gateway.proxy_url(False))
    rpc.set_credentials("anonymous", "unused")
    rpc.set_auth_type(AUTH_BASIC)
    dce = rpc.get_dce_rpc()
    with pytest.raises(Exception) as raised:
        dce.connect()
    assert "6ba" in str(raised.value).lower()


def test_direct_ncacn_http_v1_to_the_endpoint(gateway):
    rpc = transport.DCERPCTransportFactory(f"ncacn_http:127.0.0.1[{gateway.endpoint_port}]")
    dce = rpc.get_dce_rpc()
    dce.connect()
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        assert interfaces(dce) >= {MGMT, RPCECHO}
    finally:
        dce.disconnect()
