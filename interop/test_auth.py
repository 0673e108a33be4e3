"""Authentication at the proxy with real clients: impacket (Basic and NTLM, against the local
user file and, for Basic, an LDAP bind to a real Samba AD DC), NTLM tokens from impacket's own
NTLM and SPNEGO code in the Windows/Wine pattern (handshake on echo requests, channel request
without Authorization), and Kerberos through Negotiate with MIT's kinit and curl against the
Samba DC's KDC.
"""

import base64
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from impacket import ntlm
from impacket.dcerpc.v5 import mgmt, transport
from impacket.http import AUTH_BASIC, AUTH_NTLM
from impacket.spnego import SPNEGO_NegTokenInit, SPNEGO_NegTokenResp, TypesMech

from conftest import BINARY, ROOT, Gateway

PASSWORD = "Alice-pw-1"
# CONN/A1 as impacket sends it (shared/captures/client-bytes.md).
CONN_A1 = bytes.fromhex(
    "05001403100000004c00000000000000000004000600000001000000030000008896a71e9633b9589f63ec5f"
    "5f8b982403000000ce6c1f39c4ff8f2815915330f5f943140000000000000400"
)


def add_user(binary, users_file, name, password, *extra):
    subprocess.run(
        [str(binary), "user", "add", name, "--file", str(users_file), *extra],
        input=f"{password}\n", text=True, check=True, capture_output=True,
    )


@pytest.fixture(scope="module")
def auth_gateway(rpcgate_binary, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auth")
    users = tmp / "users"
    add_user(rpcgate_binary, users, "alice", PASSWORD, "--groups", "rpc-users")
    add_user(rpcgate_binary, users, "carol", "Carol-pw-1")
    add_user(rpcgate_binary, users, "dave", "Dave-pw-1")
    add_user(rpcgate_binary, users, "erin", "Erin-pw-1")
    gw = Gateway(
        rpcgate_binary, tmp,
        listener_auth=["negotiate", "ntlm", "basic"],
        extra_config=f"""
[auth]
users_file = "{users}"
netbios_domain = "RPCH"
max_failures_per_user = 3

[[auth.allow]]
users = ["alice", "carol", "erin"]
targets = "localhost:1-65535;127.0.0.1:1-65535"

[[auth.allow]]
users = ["dave"]
targets = "somewhere-else:6001"
""",
    )
    yield gw
    gw.stop()


def call_mgmt(gateway, tls, user, password, auth_type=None, domain=""):
    """inq_if_ids through the proxy; returns the number of interfaces."""
    rpc = transport.DCERPCTransportFactory(f"ncacn_http:localhost[{gateway.endpoint_port}]")
    rpc.set_rpc_proxy_url(gateway.proxy_url(tls))
    rpc.set_credentials(user, password, domain)
    if auth_type is not None:
        rpc.set_auth_type(auth_type)
    dce = rpc.get_dce_rpc()
    dce.connect()
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        resp = mgmt.hinq_if_ids(dce)
        assert resp["status"] == 0
        return len(resp["if_id_vector"]["if_id"])
    finally:
        dce.disconnect()


def legs_opened(gateway):
    log = gateway.log_text()
    return log.count("IN channel connected to the server") + log.count(
        "OUT channel connected to the server")


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_basic_with_the_local_user_file(auth_gateway, tls):
    assert call_mgmt(auth_gateway, tls, "alice", PASSWORD, AUTH_BASIC, "RPCH") >= 2
    assert 'user=alice method="basic"' in auth_gateway.log_text()


@pytest.mark.parametrize("tls", [True, False], ids=["https", "http"])
def test_ntlm_with_the_local_user_file(auth_gateway, tls):
    # impacket's default (AUTH_AUTO) does the NTLM dance: CL 0 leg, 401, AUTHENTICATE.
    assert call_mgmt(auth_gateway, tls, "alice", PASSWORD) >= 2
    assert call_mgmt(auth_gateway, tls, "alice", PASSWORD, AUTH_NTLM, "RPCH") >= 2
    assert 'user=alice method="ntlm"' in auth_gateway.log_text()


@pytest.mark.parametrize("auth_type", [AUTH_BASIC, AUTH_NTLM], ids=["basic", "ntlm"])
def test_a_wrong_password_gets_401_and_opens_no_leg(auth_gateway, auth_type):
    # The right password opens both legs (and shows that legs_opened sees them)...
    first = legs_opened(auth_gateway)
    assert call_mgmt(auth_gateway, True, "erin", "Erin-pw-1", auth_type) >= 2
    before = legs_opened(auth_gateway)
    assert before == first + 2
    # ...a wrong one none.
    with pytest.raises(Exception):
        call_mgmt(auth_gateway, True, "erin", "not-the-password", auth_type)
    assert legs_opened(auth_gateway) == before
    assert "authentication failed: wrong password (user file)" in auth_gateway.log_text()
    status, headers = raw_request(auth_gateway, basic_header("erin", "not-the-password"))
    assert status == 401


def raw_request(gateway, extra_headers="", method="RPC_IN_DATA"):
    """One echo-sized request on a fresh plain-HTTP connection: (status, header lines)."""
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as s:
        s.sendall(f"{method} /rpc/rpcproxy.dll HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  f"Content-Length: 0\r\n{extra_headers}\r\n".encode())
        head = read_head(s)
    lines = head.split("\r\n")
    return int(lines[0].split()[1]), lines[1:]


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode("latin-1")


def basic_header(user, password):
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Authorization: Basic {token}\r\n"


def test_anonymous_requests_get_401_with_the_challenges(auth_gateway):
    status, headers = raw_request(auth_gateway)
    assert status == 401
    challenges = [h.split(": ", 1)[1] for h in headers if h.startswith("WWW-Authenticate")]
    assert challenges[:2] == ["Negotiate", "NTLM"] and challenges[2].startswith("Basic realm=")
    assert "Content-Length: 0" in headers


def test_throttling_locks_a_user_after_repeated_failures(auth_gateway):
    for _ in range(3):
        assert raw_request(auth_gateway, basic_header("carol", "wrong"))[0] == 401
    # Locked: even the right password is refused, without being checked.
    assert raw_request(auth_gateway, basic_header("carol", "Carol-pw-1"))[0] == 401
    assert "too many failures for this user" in auth_gateway.log_text()


def test_authorization_refuses_targets_outside_the_users_rule(auth_gateway):
    with pytest.raises(Exception) as raised:
        call_mgmt(auth_gateway, True, "dave", "Dave-pw-1", AUTH_BASIC)
    assert "0x5" in str(raised.value) or "RPC Error: 5" in str(raised.value), raised.value
    assert "may not reach" in auth_gateway.log_text()


def ntlm_on_echo_then_channel(gateway, wrap):
    """The Windows/Wine pattern: the NTLM handshake on echo requests (wrapped by `wrap`),
    then an OUT channel request without Authorization on the same connection."""
    type1 = ntlm.getNTLMSSPType1("", "", signingRequired=False, use_ntlmv2=True)
    scheme, first, unwrap, second = wrap(type1)
    with socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10) as s:
        def echo(token):
            s.sendall(f"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      f"Content-Length: 0\r\nAuthorization: {scheme} "
                      f"{base64.b64encode(token).decode()}\r\n\r\n".encode())
            return read_head(s)

        head = echo(first)
        assert head.startswith("HTTP/1.1 401"), head
        challenge = [l.split(" ", 2)[2] for l in head.split("\r\n")
                     if l.startswith(f"WWW-Authenticate: {scheme} ")][0]
        type2 = unwrap(base64.b64decode(challenge))
        type3, _ = ntlm.getNTLMSSPType3(type1, type2, "alice", PASSWORD, "RPCH", use_ntlmv2=True)
        head = echo(second(type3.getData()))
        assert head.startswith("HTTP/1.1 200 Success"), head
        assert len(s.recv(20)) == 20  # the echo PDU
        s.sendall(f"RPC_OUT_DATA /rpc/rpcproxy.dll?localhost:{gateway.endpoint_port} HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nContent-Length: 76\r\n\r\n".encode() + CONN_A1)
        head = read_head(s)
        assert head.startswith("HTTP/1.1 200 Success"), head
        a3 = s.recv(28)
        assert a3[:4] == bytes.fromhex("05001403"), a3


def test_ntlm_on_an_echo_request_covers_the_channel_request_after_it(auth_gateway):
    ntlm_on_echo_then_channel(
        auth_gateway,
        lambda type1: ("NTLM", type1.getData(), lambda t: t, lambda t: t),
    )


def test_ntlm_inside_spnego_with_impacket_tokens(auth_gateway):
    def wrap(type1):
        init = SPNEGO_NegTokenInit()
        init["MechTypes"] = [TypesMech["NTLMSSP - Microsoft NTLM Security Support Provider"]]
        init["MechToken"] = type1.getData()

        def second(type3):
            resp = SPNEGO_NegTokenResp()
            resp["ResponseToken"] = type3
            return resp.getData()

        return ("Negotiate", init.getData(),
                lambda t: SPNEGO_NegTokenResp(t)["ResponseToken"], second)

    ntlm_on_echo_then_channel(auth_gateway, wrap)
    assert 'user=alice method="negotiate-ntlm"' in auth_gateway.log_text()


# --- against the Samba AD DC ------------------------------------------------------------


def samba_tool(dc, *args):
    subprocess.run(["samba-tool", *args, "-s", str(dc.config)], check=True,
                   capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def ldap_gateway(rpcgate_binary, samba_dc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ldap")
    samba_tool(samba_dc, "user", "add", "rpcnogroup", "Nogroup-pw-1")
    suffix = samba_dc.realm.lower()
    base_dn = ",".join(f"DC={part}" for part in suffix.split("."))
    gateways = {}
    for name, url in (("ldaps", "ldaps://localhost"), ("starttls", "ldap://localhost")):
        (tmp / name).mkdir()
        gateways[name] = Gateway(
            rpcgate_binary, tmp / name,
            listener_auth=["basic"],
            extra_config=f"""
[auth]
users_file = "{tmp / 'users'}"

[auth.ldap]
url = "{url}"
starttls = {"true" if name == "starttls" else "false"}
ca_file = "{samba_dc.tls_ca}"
bind_dn = "{{user}}@{suffix}"
domain = "{samba_dc.domain}"
upn_suffix = "{suffix}"
base_dn = "{base_dn}"
require_group = "Domain Admins"
""",
        )
    yield gateways
    for gw in gateways.values():
        gw.stop()


@pytest.mark.parametrize("transport_kind", ["ldaps", "starttls"])
def test_basic_with_an_ldap_bind_to_the_samba_dc(ldap_gateway, samba_dc, transport_kind):
    gw = ldap_gateway[transport_kind]
    # impacket sends Basic base64("DOMAIN\\user:password").
    assert call_mgmt(gw, True, samba_dc.admin, samba_dc.password, AUTH_BASIC,
                     samba_dc.domain) >= 2
    upn = f"{samba_dc.admin}@{samba_dc.realm.lower()}"
    assert call_mgmt(gw, True, upn, samba_dc.password, AUTH_BASIC) >= 2
    assert f'user={samba_dc.domain}\\{samba_dc.admin} method="basic-ldap"' in gw.log_text()

    before = legs_opened(gw)
    with pytest.raises(Exception):
        call_mgmt(gw, True, samba_dc.admin, "wrong-password", AUTH_BASIC, samba_dc.domain)
    # A user who binds fine but is not in the required group.
    with pytest.raises(Exception):
        call_mgmt(gw, True, "rpcnogroup", "Nogroup-pw-1", AUTH_BASIC, samba_dc.domain)
    assert legs_opened(gw) == before
    log = gw.log_text()
    assert "LDAP result 49" in log
    assert "rpcnogroup is not a member of Domain Admins" in log


# --- Kerberos ---------------------------------------------------------------------------

KERBEROS_BINARY = ROOT / "target" / "kerberos" / "debug" / "rpcgate"


@pytest.fixture(scope="session")
def kerberos_binary():
    """rpcgate built with the `kerberos` feature (its own target directory, so that the
    default build used by the other tests is not replaced)."""
    missing = [what for what, present in (
        ("kinit (krb5-user)", shutil.which("kinit")),
        ("curl", shutil.which("curl")),
        ("libkrb5-dev", Path("/usr/include/gssapi/gssapi.h").exists()),
    ) if not present]
    if missing:
        message = f"Kerberos test needs {', '.join(missing)} (scripts/test-all setup)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    subprocess.run(
        ["cargo", "build", "--locked", "-p", "rpcgate", "--bin", "rpcgate",
         "--features", "kerberos", "--target-dir", str(ROOT / "target" / "kerberos")],
        cwd=ROOT, check=True,
    )
    return KERBEROS_BINARY


def test_negotiate_kerberos_with_kinit_and_curl(kerberos_binary, samba_dc, tmp_path):
    realm = samba_dc.realm
    # A service account with the gateway's SPN, and its keytab (as an administrator would).
    samba_tool(samba_dc, "user", "add", "rpcgate-http", "Http-svc-pw-1")
    samba_tool(samba_dc, "spn", "add", "HTTP/localhost", "rpcgate-http")
    keytab = tmp_path / "http.keytab"
    samba_tool(samba_dc, "domain", "exportkeytab", str(keytab), "--principal=HTTP/localhost")
    krb5_conf = tmp_path / "krb5.conf"
    krb5_conf.write_text(f"""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
[realms]
    {realm} = {{
        kdc = 127.0.0.1
    }}
[domain_realm]
    localhost = {realm}
""")
    env = {**os.environ, "KRB5_CONFIG": str(krb5_conf),
           "KRB5CCNAME": f"FILE:{tmp_path / 'ccache'}"}
    subprocess.run(["kinit", f"{samba_dc.admin}@{realm}"], input=samba_dc.password + "\n",
                   text=True, env=env, check=True, capture_output=True, timeout=30)

    (tmp_path / "gw").mkdir()
    gw = Gateway(
        kerberos_binary, tmp_path / "gw",
        listener_auth=["negotiate", "ntlm"],
        extra_config=f"""
[auth]
users_file = "{tmp_path / 'users'}"

[auth.kerberos]
keytab = "{keytab}"
principal = "HTTP/localhost"
""",
        env={"KRB5_CONFIG": str(krb5_conf)},
    )
    try:
        url = f"http://localhost:{gw.http_port}/rpc/rpcproxy.dll"
        curl = ["curl", "-sS", "--negotiate", "-u", ":", "-X", "RPC_IN_DATA",
                "-H", "Content-Length: 0", "-D", "-", "-o", str(tmp_path / "body"), url]
        out = subprocess.run(curl, env=env, capture_output=True, text=True, timeout=30)
        assert "HTTP/1.1 200 Success" in out.stdout, out.stdout + out.stderr
        # Mutual authentication: the acceptor's final token comes back on the 200.
        assert "WWW-Authenticate: Negotiate " in out.stdout
        assert (tmp_path / "body").read_bytes()[:4] == bytes.fromhex("05001403")
        log = gw.log_text()
        assert f'user={samba_dc.admin}@{realm} method="negotiate-kerberos"' in log, log

        # Without a ticket: 401.
        env["KRB5CCNAME"] = f"FILE:{tmp_path / 'empty-ccache'}"
        out = subprocess.run(curl, env=env, capture_output=True, text=True, timeout=30)
        assert "HTTP/1.1 401" in out.stdout, out.stdout + out.stderr
    finally:
        gw.stop()


# --- NTLM for domain users through winbind ----------------------------------------------

# Where ntlm_auth (libwbclient) looks for winbindd: compiled in, not read from smb.conf, and
# refused if it is a symbolic link.
WINBINDD_SOCKET_DIR = Path("/run/samba/winbindd")


@pytest.fixture
def winbind_socket(samba_dc):
    """The test DC's winbindd made reachable where ntlm_auth looks for it (a bind mount,
    undone afterwards), unless a winbindd already answers there."""
    missing = None
    if not shutil.which("ntlm_auth") or "winbindd" not in samba_dc.services:
        missing = "NTLM through winbind needs Debian's winbind package (scripts/test-all setup)"
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    ours = samba_dc.run_dir / "winbindd"
    deadline = time.monotonic() + 30
    while not (ours / "pipe").exists():
        if time.monotonic() > deadline:
            pytest.fail(f"the test DC's winbindd made no socket in {ours}")
        time.sleep(0.2)
    if (WINBINDD_SOCKET_DIR / "pipe").exists():
        pytest.skip(f"a winbindd already listens in {WINBINDD_SOCKET_DIR}")
    WINBINDD_SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "--bind", str(ours), str(WINBINDD_SOCKET_DIR)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount {ours} on {WINBINDD_SOCKET_DIR}: {mount.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(WINBINDD_SOCKET_DIR)], check=False)
        try:
            WINBINDD_SOCKET_DIR.rmdir()
        except OSError:
            pass


def test_ntlm_for_domain_users_through_winbind(rpcgate_binary, samba_dc, winbind_socket,
                                               tmp_path):
    users = tmp_path / "users"
    add_user(rpcgate_binary, users, "alice", PASSWORD)
    (tmp_path / "gw").mkdir()
    gw = Gateway(
        rpcgate_binary, tmp_path / "gw",
        listener_auth=["ntlm"],
        extra_config=f"""
[auth]
users_file = "{users}"
netbios_domain = "RPCH"
ntlm_helper = ["/usr/bin/ntlm_auth", "--helper-protocol=squid-2.5-ntlmssp",
               "--configfile={samba_dc.config}"]
""",
    )
    try:
        # A domain account: verified by the DC through winbind.
        assert call_mgmt(gw, False, samba_dc.admin, samba_dc.password, AUTH_NTLM,
                         samba_dc.domain) >= 2
        # A local account still works when the helper made the challenge.
        assert call_mgmt(gw, False, "alice", PASSWORD, AUTH_NTLM, "RPCH") >= 2
        before = legs_opened(gw)
        with pytest.raises(Exception):
            call_mgmt(gw, False, samba_dc.admin, "wrong-password", AUTH_NTLM, samba_dc.domain)
        assert legs_opened(gw) == before
        log = gw.log_text()
        # winbind names the account as DOMAIN\user, in its own case.
        assert f'user={samba_dc.domain}\\{samba_dc.admin} method="ntlm"'.lower() in log.lower()
        assert "winbind: NT_STATUS_LOGON_FAILURE" in log
    finally:
        gw.stop()


# --- Samba's own client ---------------------------------------------------------------

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.parametrize("http_auth", ["basic", "ntlm"])
def test_samba_roh_client_authenticates_and_reaches_the_dcs_samr(
        rpcgate_binary, samba_dc, tmp_path, request, http_auth):
    """Samba's dcerpc_roh (HTTP/1.0, NTLM legs with the query) with the DC's Administrator:
    Basic checked by an LDAPS bind, NTLM by winbind; then its own NTLM bind to samr through
    the endpoint."""
    if subprocess.run([SYSTEM_PYTHON, "-c", "import samba.dcerpc.samr"]).returncode != 0:
        pytest.skip("Samba's Python bindings (python3-samba) are not installed")
    if http_auth == "ntlm":
        request.getfixturevalue("winbind_socket")
    suffix = samba_dc.realm.lower()
    (tmp_path / "gw").mkdir()
    gw = Gateway(
        rpcgate_binary, tmp_path / "gw",
        endpoints=[f"127.0.0.1:{samba_dc.ports['samr']}"],
        listener_auth=["ntlm", "basic"],
        extra_config=f"""
[auth]
users_file = "{tmp_path / 'users'}"
ntlm_helper = ["/usr/bin/ntlm_auth", "--helper-protocol=squid-2.5-ntlmssp",
               "--configfile={samba_dc.config}"]

[auth.ldap]
url = "ldaps://localhost"
ca_file = "{samba_dc.tls_ca}"
bind_dn = "{{user}}@{suffix}"
domain = "{samba_dc.domain}"
upn_suffix = "{suffix}"
""",
    )
    try:
        out = subprocess.run(
            [SYSTEM_PYTHON, str(ROOT / "interop" / "samba_roh_client.py"),
             str(gw.endpoint_port), str(gw.http_port), http_auth, samba_dc.admin,
             samba_dc.domain],
            input=samba_dc.password + "\n", capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert {"BUILTIN", samba_dc.domain} <= set(out.stdout.split()), out.stdout
        method = "basic-ldap" if http_auth == "basic" else "ntlm"
        assert gw.log_text().lower().count(f'method="{method}"') >= 2  # IN and OUT
    finally:
        gw.stop()
