"""Autodiscover against the Samba AD DC: users created with samba-tool are found by `mail`,
by `proxyAddresses` and by `userPrincipalName`, their RPC server read from a configurable
attribute (here physicalDeliveryOfficeName, holding a name or a DN), the default server used
when the attribute is empty; an unknown address gets error 500. The same answers come from
`POST /autodiscover/autodiscover.xml` on a running gateway and from `rpcgate autodiscover`,
and `rpcgate ping --autodiscover` follows the answer through to the demo service."""

import http.client
import subprocess
import xml.etree.ElementTree as ET

import pytest

from conftest import Gateway

DOMAIN = "rpcgate.test"
REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
ERROR_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
PASSWORD = "Autodiscover-Pass-1"


def samba_tool(dc, *args, check=True):
    result = subprocess.run(["samba-tool", *args, "-s", str(dc.config)],
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"samba-tool {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


def add_attribute(dc, tmp, user, line):
    """Appends an attribute line to the user's entry, through samba-tool user edit."""
    editor = tmp / f"editor-{user}.sh"
    editor.write_text("#!/usr/bin/python3\nimport sys\n"
                      "text = open(sys.argv[1]).read().rstrip('\\n')\n"
                      f"open(sys.argv[1], 'w').write(text + '\\n' + {line!r} + '\\n')\n")
    editor.chmod(0o755)
    samba_tool(dc, "user", "edit", user, f"--editor={editor}")


def request(address):
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<Autodiscover xmlns="{REQUEST_NS}">'
            f"<Request><EMailAddress>{address}</EMailAddress>"
            f"<AcceptableResponseSchema>{RESPONSE_NS}</AcceptableResponseSchema>"
            "</Request></Autodiscover>")


def post(gw, address):
    conn = http.client.HTTPConnection("127.0.0.1", gw.http_port, timeout=30)
    conn.request("POST", "/autodiscover/autodiscover.xml", request(address),
                 {"Content-Type": "text/xml"})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    assert response.status == 200, body
    return ET.fromstring(body)


def settings(root):
    """(EXCH server, EXPR server, display name) of a settings answer."""
    ns = {"r": RESPONSE_NS}
    protocols = {p.findtext("r:Type", namespaces=ns): p
                 for p in root.iterfind(".//r:Protocol", ns)}
    assert "EXCH" in protocols and "EXPR" in protocols, ET.tostring(root)
    return (protocols["EXCH"].findtext("r:Server", namespaces=ns),
            protocols["EXPR"].findtext("r:Server", namespaces=ns),
            root.findtext(".//r:User/r:DisplayName", namespaces=ns))


def error_code(root):
    for element in root.iter():
        if element.tag.endswith("}ErrorCode"):
            return int(element.text)
    return None


@pytest.fixture(scope="module")
def directory_users(samba_dc, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autodiscover-users")
    for user in ("ad-alice", "ad-bob", "ad-carol"):
        samba_tool(samba_dc, "user", "delete", user, check=False)
    samba_tool(samba_dc, "user", "create", "ad-alice", PASSWORD, "--given-name=Alice",
               "--surname=Example", f"--mail-address=alice@{DOMAIN}",
               f"--physical-delivery-office=mbx1.{DOMAIN}")
    # Bob has no mail attribute: only a proxyAddresses value, and his server as a DN.
    samba_tool(samba_dc, "user", "create", "ad-bob", PASSWORD,
               "--physical-delivery-office=CN=MBX2,CN=Servers,DC=rpcgate,DC=test")
    add_attribute(samba_dc, tmp, "ad-bob", f"proxyAddresses: SMTP:bob.smith@{DOMAIN}")
    # Carol: found by the UPN samba-tool gives her (ad-carol@rpcgate.test), no server of
    # her own.
    samba_tool(samba_dc, "user", "create", "ad-carol", PASSWORD,
               f"--mail-address=carol.other@{DOMAIN}")
    yield
    for user in ("ad-alice", "ad-bob", "ad-carol"):
        samba_tool(samba_dc, "user", "delete", user, check=False)


@pytest.fixture(scope="module")
def gateway_with_directory(rpcgate_binary, samba_dc, directory_users, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autodiscover")
    password_file = tmp / "ldap-password"
    password_file.write_text(samba_dc.password + "\n")
    suffix = samba_dc.realm.lower()
    base_dn = ",".join(f"DC={part}" for part in suffix.split("."))
    extra = f"""
[client]
external_host = "127.0.0.1"

[autodiscover]
domains = ["{DOMAIN}"]
server = "localhost"

[autodiscover.ldap]
url = "ldaps://localhost"
ca_file = "{samba_dc.tls_ca}"
bind_dn = "{samba_dc.admin}@{suffix}"
password_file = "{password_file}"
base_dn = "{base_dn}"
server_attribute = "physicalDeliveryOfficeName"
timeout_secs = 10
"""
    gw = Gateway(rpcgate_binary, tmp, extra_config=extra)
    yield gw
    gw.stop()


def test_directory_lookups_over_http(gateway_with_directory):
    gw = gateway_with_directory
    assert settings(post(gw, f"alice@{DOMAIN}")) == (f"mbx1.{DOMAIN}", "127.0.0.1",
                                                     "Alice Example")
    exch, expr, _ = settings(post(gw, f"BOB.SMITH@{DOMAIN}"))
    assert (exch, expr) == ("MBX2", "127.0.0.1")
    exch, _, _ = settings(post(gw, f"ad-carol@{DOMAIN}"))
    assert exch == "localhost"
    assert error_code(post(gw, f"nobody@{DOMAIN}")) == 500
    assert error_code(post(gw, "alice@elsewhere.example")) == 500
    log = gw.log_text()
    assert "autodiscover: EXCH MBX2" in log, log[-3000:]
    assert "no such user" in log


def test_command_and_ping_use_the_directory(rpcgate_binary, gateway_with_directory):
    gw = gateway_with_directory
    out = subprocess.run([str(rpcgate_binary), "autodiscover", f"alice@{DOMAIN}",
                          "--config", str(gw.config)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"<Server>mbx1.{DOMAIN}</Server>" in out.stdout
    assert f"EXCH mbx1.{DOMAIN}" in out.stderr

    # Carol's server is the default, localhost: ping goes through to the demo service.
    ping = subprocess.run([str(rpcgate_binary), "ping", "--autodiscover", f"ad-carol@{DOMAIN}",
                           f"https://127.0.0.1:{gw.https_port}", "-e", str(gw.endpoint_port),
                           "--insecure", "--timeout", "10"],
                          capture_output=True, text=True, timeout=120)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "EXCH     localhost" in ping.stdout
    assert "mgmt inq_if_ids" in ping.stdout
