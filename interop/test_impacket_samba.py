"""impacket through rpcgate to a real Samba AD DC (interop/samba_dc.py), compared with direct calls.

The gateway publishes two of Samba's ncacn_ip_tcp ports behind two endpoints: the endpoint
mapper (127.0.0.1:135) and the port of samr, lsarpc and drsuapi (the first free one from
49152, read from Samba's endpoint mapper). Each check makes the same calls through rpcgate (RPC over HTTP v2
through the HTTPS and the plain-HTTP proxy listener, and v1 straight to the endpoint) and
directly over ncacn_ip_tcp, and asserts that the answers are equal:

- the endpoint mapper's ept_map for samr, lsarpc and netlogon (towers byte for byte);
- samr as the domain administrator, authenticated at the RPC layer with NTLM (packet privacy
  and packet integrity): SamrConnect, SamrEnumerateDomainsInSamServer,
  SamrLookupDomainInSamServer, SamrOpenDomain, SamrEnumerateUsersInDomain;
- a wrong password: Samba answers the first call after the bind with the same fault through
  rpcgate as directly, and its authentication audit logs the NTLM attempt that came through.

The proxy listeners are anonymous loopback ones: impacket's HTTP layer sends Basic with
throwaway credentials, which the proxy ignores; the RPC-level NTLM is what Samba checks.
"""

import json
import subprocess
import time
from struct import unpack

import pytest
from impacket.dcerpc.v5 import epm, lsat, nrpc, samr, transport
from impacket.dcerpc.v5.rpcrt import (
    RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
    RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
    RPC_C_AUTHN_WINNT,
    DCERPCException,
)
from impacket.http import AUTH_BASIC
from impacket.uuid import uuidtup_to_bin

from conftest import Gateway
from samba_dc import RPC_SERVER_PORT

pytestmark = pytest.mark.timeout(120)

# Ways to reach a Samba port: through rpcgate (v2 over HTTPS or HTTP, v1 to the endpoint)
# or straight to Samba.
THROUGH_RPCGATE = ["https", "http", "v1"]
AUTH_LEVELS = {
    "privacy": RPC_C_AUTHN_LEVEL_PKT_PRIVACY,
    "integrity": RPC_C_AUTHN_LEVEL_PKT_INTEGRITY,
}


@pytest.fixture(scope="module")
def samba_gateway(rpcgate_binary, samba_dc, tmp_path_factory):
    """rpcgate with one endpoint in front of Samba's endpoint mapper and one in front of its
    samr port; `published` maps each Samba port to the port of the endpoint in front of it."""
    samba_ports = [135, samba_dc.ports["samr"]]
    gw = Gateway(
        rpcgate_binary,
        tmp_path_factory.mktemp("samba-gateway"),
        endpoints=[f"127.0.0.1:{port}" for port in samba_ports],
    )
    gw.published = dict(zip(samba_ports, gw.endpoint_ports))
    yield gw
    gw.stop()


def connect(way, samba_port, gateway=None, auth=None):
    """A connected impacket DCE/RPC to Samba's `samba_port`: "direct" over ncacn_ip_tcp, or
    through `gateway`'s endpoint in front of that port ("https" and "http": v2 through that
    proxy listener; "v1": straight to the endpoint). `auth`: (user, password, domain, level)
    for NTLM at the RPC layer."""
    if way == "direct":
        rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:127.0.0.1[{samba_port}]")
    elif way == "v1":
        rpc = transport.DCERPCTransportFactory(
            f"ncacn_http:127.0.0.1[{gateway.published[samba_port]}]")
    else:
        rpc = transport.DCERPCTransportFactory(
            f"ncacn_http:localhost[{gateway.published[samba_port]}]")
        rpc.set_rpc_proxy_url(gateway.proxy_url(tls=way == "https"))
        # HTTP credentials for the anonymous loopback listener (not checked).
        rpc.set_credentials("anonymous", "unused")
        rpc.set_auth_type(AUTH_BASIC)
    dce = rpc.get_dce_rpc()
    if auth is not None:
        user, password, domain, level = auth
        dce.set_credentials(user, password, domain)
        dce.set_auth_type(RPC_C_AUTHN_WINNT)
        dce.set_auth_level(level)
    dce.connect()
    return dce


# --- endpoint mapper ---------------------------------------------------------------------

MAPPED = {
    "samr": samr.MSRPC_UUID_SAMR,
    "lsarpc": lsat.MSRPC_UUID_LSAT,
    "netlogon": nrpc.MSRPC_UUID_NRPC,
}


def ept_map_answers(open_connection):
    """For each interface in MAPPED, on a new connection from `open_connection()` (hept_map
    binds the endpoint mapper each time, and a connection binds an interface once): hept_map's
    string binding, then the same request once more, keeping every tower, not just the first."""
    answers = {}
    for name, uuid in MAPPED.items():
        dce = open_connection()
        try:
            binding = epm.hept_map("127.0.0.1", uuid, protocol="ncacn_ip_tcp", dce=dce)
            answers[name] = (binding, raw_ept_map(dce, uuid))
        finally:
            dce.disconnect()
    return answers


def raw_ept_map(dce, uuid):
    """ept_map for `uuid` over ncacn_ip_tcp, built as hept_map builds it: every tower returned."""
    tower = epm.EPMTower()
    interface = epm.EPMRPCInterface()
    interface["InterfaceUUID"] = uuid[:16]
    interface["MajorVersion"] = unpack("<H", uuid[16:18])[0]
    interface["MinorVersion"] = unpack("<H", uuid[18:20])[0]
    ndr = uuidtup_to_bin(("8a885d04-1ceb-11c9-9fe8-08002b104860", "2.0"))
    data_rep = epm.EPMRPCDataRepresentation()
    data_rep["DataRepUuid"] = ndr[:16]
    data_rep["MajorVersion"] = unpack("<H", ndr[16:18])[0]
    data_rep["MinorVersion"] = unpack("<H", ndr[18:20])[0]
    protocol = epm.EPMProtocolIdentifier()
    protocol["ProtIdentifier"] = epm.FLOOR_RPCV5_IDENTIFIER
    port = epm.EPMPortAddr()
    port["IpPort"] = 0
    host = epm.EPMHostAddr()
    host["Ip4addr"] = b"\0\0\0\0"
    tower["NumberOfFloors"] = 5
    tower["Floors"] = (interface.getData() + data_rep.getData() + protocol.getData()
                       + port.getData() + host.getData())
    request = epm.ept_map()
    request["max_towers"] = 4
    request["map_tower"]["tower_length"] = len(tower)
    request["map_tower"]["tower_octet_string"] = tower.getData()
    request.fields["obj"].fields["ReferentID"] = 1
    request.fields["map_tower"].fields["ReferentID"] = 2
    response = dce.request(request)
    assert response["status"] == 0, hex(response["status"])
    return [b"".join(t["Data"]["tower_octet_string"]) for t in response["ITowers"]][
        : response["num_towers"]
    ]


@pytest.fixture(scope="module")
def direct_ept_map(samba_dc):
    return ept_map_answers(lambda: connect("direct", 135))


@pytest.mark.parametrize("way", THROUGH_RPCGATE)
def test_ept_map_through_rpcgate_equals_direct(samba_dc, samba_gateway, direct_ept_map, way):
    # Samba's own answers: samr and lsarpc on the port the gateway publishes, netlogon on
    # the pinned `rpc server port`.
    samr_port = samba_dc.ports["samr"]
    assert direct_ept_map["samr"][0] == f"ncacn_ip_tcp:127.0.0.1[{samr_port}]"
    assert direct_ept_map["lsarpc"][0] == f"ncacn_ip_tcp:127.0.0.1[{samr_port}]"
    assert direct_ept_map["netlogon"][0] == f"ncacn_ip_tcp:127.0.0.1[{RPC_SERVER_PORT}]"
    assert all(towers for _, towers in direct_ept_map.values())

    answers = ept_map_answers(lambda: connect(way, 135, samba_gateway))
    assert answers == direct_ept_map


# --- samr as the domain administrator -----------------------------------------------------


def samr_answers(dce):
    """SamrConnect, EnumerateDomains, LookupDomain and OpenDomain of the NetBIOS domain,
    EnumerateUsers: the domains, the domain SID and the users as (name, RID)."""
    dce.bind(samr.MSRPC_UUID_SAMR)
    server = samr.hSamrConnect(dce)["ServerHandle"]
    domains = [entry["Name"] for entry in
               samr.hSamrEnumerateDomainsInSamServer(dce, server)["Buffer"]["Buffer"]]
    domain = next(name for name in domains if name.upper() != "BUILTIN")
    sid = samr.hSamrLookupDomainInSamServer(dce, server, domain)["DomainId"]
    handle = samr.hSamrOpenDomain(dce, server, domainId=sid)["DomainHandle"]
    users = []
    context = 0
    while True:
        try:
            answer = samr.hSamrEnumerateUsersInDomain(dce, handle, enumerationContext=context)
        except DCERPCException as error:
            if "STATUS_MORE_ENTRIES" not in str(error):
                raise
            answer = error.get_packet()
        users += [(entry["Name"], entry["RelativeId"]) for entry in answer["Buffer"]["Buffer"]]
        context = answer["EnumerationContext"]
        if answer["ErrorCode"] == 0:
            break
    samr.hSamrCloseHandle(dce, handle)
    samr.hSamrCloseHandle(dce, server)
    return {"domains": sorted(domains), "domain": domain, "sid": sid.formatCanonical(),
            "users": sorted(users)}


def admin(samba_dc, level):
    return (samba_dc.admin, samba_dc.password, samba_dc.domain, AUTH_LEVELS[level])


@pytest.fixture(scope="module")
def direct_samr(samba_dc):
    """samr_answers straight over ncacn_ip_tcp, for each auth level."""
    answers = {}
    for level in AUTH_LEVELS:
        dce = connect("direct", samba_dc.ports["samr"], auth=admin(samba_dc, level))
        try:
            answers[level] = samr_answers(dce)
        finally:
            dce.disconnect()
    return answers


def test_samr_direct_sees_the_provisioned_domain(samba_dc, direct_samr):
    for answer in direct_samr.values():
        assert answer == direct_samr["privacy"]
    answer = direct_samr["privacy"]
    assert answer["domains"] == ["BUILTIN", samba_dc.domain]
    assert answer["domain"] == samba_dc.domain
    assert answer["sid"].startswith("S-1-5-21-")
    users = dict(answer["users"])
    assert users["Administrator"] == 500
    assert users["Guest"] == 501
    assert users["krbtgt"] == 502


@pytest.mark.parametrize("level", AUTH_LEVELS)
@pytest.mark.parametrize("way", THROUGH_RPCGATE)
def test_samr_through_rpcgate_equals_direct(samba_dc, samba_gateway, direct_samr, way, level):
    dce = connect(way, samba_dc.ports["samr"], samba_gateway, admin(samba_dc, level))
    try:
        assert samr_answers(dce) == direct_samr[level]
    finally:
        dce.disconnect()


def refusal(dce):
    """How Samba refuses a wrong password: impacket's bind sends NTLM's AUTH3 without waiting
    for an answer, so the fault comes on the first call (Samba 4.17: nca_s_proto_error)."""
    with pytest.raises(DCERPCException) as raised:
        dce.bind(samr.MSRPC_UUID_SAMR)
        samr.hSamrConnect(dce)
    return str(raised.value)


def wrong_password_audits(samba_dc):
    return samba_dc.log_tail(100_000).count("status [NT_STATUS_WRONG_PASSWORD]")


@pytest.mark.parametrize("way", ["https", "v1"])
def test_wrong_password_is_refused_alike(samba_dc, samba_gateway, way):
    wrong = (samba_dc.admin, "not-the-password", samba_dc.domain, RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    direct = connect("direct", samba_dc.ports["samr"], auth=wrong)
    try:
        expected = refusal(direct)
    finally:
        direct.disconnect()
    audits = wrong_password_audits(samba_dc)
    through = connect(way, samba_dc.ports["samr"], samba_gateway, wrong)
    try:
        assert refusal(through) == expected
    finally:
        through.disconnect()
    # Samba's auth audit (log level auth_audit:3) saw the NTLM exchange through rpcgate.
    deadline = time.monotonic() + 5
    while wrong_password_audits(samba_dc) == audits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wrong_password_audits(samba_dc) == audits + 1


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_rpcgate_ping_reaches_the_dc_through_rpcgate(samba_gateway, samba_dc, rpcgate_binary, tls):
    """`rpcgate ping` walks the whole path to the DC's samr port and calls the DCE management
    interface there (Samba serves it on the same port); -E checks the proxy alone."""
    endpoint = samba_gateway.published[samba_dc.ports["samr"]]
    base = samba_gateway.proxy_url(tls).rsplit("/rpc/", 1)[0]
    tls_args = ["--ca", str(samba_gateway.state_dir / "cert.pem")] if tls else []
    run = subprocess.run(
        [str(rpcgate_binary), "ping", base, "-e", f"localhost:{endpoint}", "--json", *tls_args],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert stages["call"]["status"] == "ok", report
    # The interfaces Samba lists on its samr port include samr itself.
    assert "12345778-1234-abcd-ef00-0123456789ac" in run.stdout.lower(), run.stdout
    proxy_only = subprocess.run(
        [str(rpcgate_binary), "ping", base, "-E", *tls_args],
        capture_output=True, text=True, timeout=60,
    )
    assert proxy_only.returncode == 0, proxy_only.stdout + proxy_only.stderr
