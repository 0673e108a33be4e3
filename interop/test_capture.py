"""One complete impacket session through rpcgate captured on loopback and dissected by Wireshark.

tshark captures the plain-HTTP proxy listener's port and the endpoint's port while impacket
connects through the proxy (RPC over HTTP v2), binds the DCE management interface and calls
inq_if_ids. Wireshark's DCE/RPC dissector must then find RTS, bind, bind_ack, request and
response PDUs both in the HTTP bodies (client <-> proxy) and on the proxy <-> endpoint legs,
with no malformed packet and no error-severity expert entry.

What Wireshark 4.0 does with these streams decides how the file is read, in two passes:

- HTTP view, `-d tcp.port==<http port>,http`: the request and response heads, and the PDUs
  that share a TCP segment with a head (CONN/A1, the 76-byte OUT request body; CONN/A3,
  right behind `200 Success`): the HTTP dissector hands an `application/rpc` body to DCE/RPC.
  Later segments of a 1 GiB channel body are only "Continuation" to it.
- Body view, `--disable-protocol http`: DCE/RPC's own TCP heuristic then takes every segment
  that starts with a PDU, on the HTTP connections (CONN/B1, CONN/C2, bind, request, ...) as on
  the legs.

On the legs, `-d tcp.port==<endpoint port>,dcerpc` would be wrong: the endpoint greets each leg
with the 14-byte legacy string `ncacn_http/1.0`, which the forced DCE/RPC dissector takes
for the start of a PDU whose fragment length (bytes 8-9, "tp") is some 29 KB, and then holds
every following segment of that direction as part of it: CONN/B3, CONN/C1 and every answer
go undissected. The heuristic skips the greeting and dissects every PDU after it, so the legs need
no decode-as at all (and none is given, in either pass).
"""

import os
import shutil
import subprocess
import time

import pytest

from conftest import Gateway
from impacket.dcerpc.v5 import mgmt, transport
from impacket.http import AUTH_BASIC

pytestmark = pytest.mark.timeout(120)

TSHARK = shutil.which("tshark")
RTS, BIND, BIND_ACK, REQUEST, RESPONSE = 20, 11, 12, 0, 2
FIELDS = [
    "frame.number",
    "tcp.srcport",
    "tcp.dstport",
    "dcerpc.pkt_type",
    "http.request.method",
    "http.response.code",
    "http.response.phrase",
    "_ws.col.Info",
]


def capture_session(gateway, pcap):
    """Runs the impacket session while tshark captures both ports; returns tshark's stderr."""
    ports = (gateway.http_port, gateway.endpoint_port)
    capture = subprocess.Popen(
        [TSHARK, "-i", "lo", "-f", " or ".join(f"tcp port {p}" for p in ports), "-w", str(pcap)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    messages = []
    try:
        # tshark logs "Capture started." once dumpcap really captures; traffic sent before
        # that (even after "Capturing on 'Loopback: lo'") is lost.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = capture.stderr.readline()
            messages.append(line)
            if "Capture started" in line or not line:
                break
        if capture.poll() is not None:
            pytest.skip(f"cannot capture on lo here: {''.join(messages).strip()}")

        rpc = transport.DCERPCTransportFactory(f"ncacn_http:localhost[{gateway.endpoint_port}]")
        rpc.set_rpc_proxy_url(gateway.proxy_url(tls=False))
        rpc.set_credentials("capture", "unused")  # anonymous loopback listener
        rpc.set_auth_type(AUTH_BASIC)
        dce = rpc.get_dce_rpc()
        dce.connect()
        try:
            dce.bind(mgmt.MSRPC_UUID_MGMT)
            assert mgmt.hinq_if_ids(dce)["status"] == 0
        finally:
            dce.disconnect()
        time.sleep(0.5)  # the connections' FINs
    finally:
        capture.terminate()
        rest = capture.communicate(timeout=30)[1]
    return "".join(messages) + rest


def dissect(pcap, options, display_filter=None):
    """tshark's rows for `pcap` read with `options`: one dict of FIELDS per frame."""
    command = [TSHARK, "-r", str(pcap), *options, "-T", "fields"]
    command += ["-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in FIELDS:
        command += ["-e", field]
    if display_filter:
        command += ["-Y", display_filter]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    rows = []
    for line in result.stdout.splitlines():
        values = line.split("\t")
        rows.append(dict(zip(FIELDS, values + [""] * (len(FIELDS) - len(values)))))
    return rows


def pdu_types(rows, port):
    """The DCE/RPC packet types dissected in frames to or from `port`."""
    found = set()
    for row in rows:
        if str(port) in (row["tcp.srcport"], row["tcp.dstport"]) and row["dcerpc.pkt_type"]:
            found.update(int(t) for t in row["dcerpc.pkt_type"].split(","))
    return found


def infos(rows, port):
    return " | ".join(
        row["_ws.col.Info"] for row in rows if str(port) in (row["tcp.srcport"], row["tcp.dstport"])
    )


@pytest.fixture(scope="module")
def gateway(rpcgate_binary, tmp_path_factory):
    """The legs must cross loopback TCP to be captured: proxy and endpoint run in one process,
    so in-process legs (the default) are turned off here."""
    gw = Gateway(
        rpcgate_binary,
        tmp_path_factory.mktemp("gateway"),
        proxy_extra="in_process_endpoints = false",
    )
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def capture(gateway, tmp_path_factory):
    if TSHARK is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is not installed (scripts/test-all setup installs it)")
        pytest.skip("tshark is not installed (scripts/test-all setup installs it)")
    pcap = tmp_path_factory.mktemp("capture") / "session.pcapng"
    log = capture_session(gateway, pcap)
    assert pcap.exists() and pcap.stat().st_size > 0, log
    http_view = ["-o", "tcp.try_heuristic_first:TRUE", "-d", f"tcp.port=={gateway.http_port},http"]
    body_view = ["--disable-protocol", "http"]
    return pcap, http_view, body_view


def test_http_view_shows_both_channels_and_the_pdus_next_to_the_heads(gateway, capture):
    pcap, http_view, _ = capture
    rows = dissect(pcap, http_view)
    methods = {row["http.request.method"] for row in rows}
    assert {"RPC_IN_DATA", "RPC_OUT_DATA"} <= methods, methods
    responses = {(row["http.response.code"], row["http.response.phrase"]) for row in rows}
    assert {("100", "Continue"), ("200", "Success")} <= responses, responses
    text = infos(rows, gateway.http_port)
    assert "CONN/A1" in text and "CONN/A3" in text, text
    # The legs, by DCE/RPC's heuristic.
    assert pdu_types(rows, gateway.endpoint_port) >= {RTS, BIND, BIND_ACK, REQUEST, RESPONSE}


def test_body_view_dissects_every_pdu_type_in_the_http_bodies_and_on_the_legs(gateway, capture):
    pcap, http_view, body_view = capture
    rows = dissect(pcap, body_view)
    for port, where in ((gateway.http_port, "HTTP bodies"), (gateway.endpoint_port, "legs")):
        found = pdu_types(rows, port)
        assert found >= {RTS, BIND, BIND_ACK, REQUEST, RESPONSE}, (where, found, infos(rows, port))
    text = infos(rows, gateway.http_port)
    assert "CONN/B1" in text, text
    # CONN/C2 may share the TCP segment of the OUT response head (the proxy writes what is
    # ready in one go), and is then dissected in the HTTP view instead: one of the two has it.
    both = text + " | " + infos(dissect(pcap, http_view), gateway.http_port)
    assert "CONN/C2" in both, both
    text = infos(rows, gateway.endpoint_port)
    for pdu in ("CONN/A2", "CONN/B2", "CONN/B3", "CONN/C1"):
        assert pdu in text, (pdu, text)


@pytest.mark.parametrize("view", ["http", "body"])
def test_no_malformed_packet_and_no_error_expert_entry(capture, view):
    pcap, http_view, body_view = capture
    options = http_view if view == "http" else body_view
    bad = dissect(pcap, options, '_ws.malformed || _ws.expert.severity == "Error"')
    assert bad == [], bad
    # The filter matches what it should: the same capture has note-level entries.
    assert dissect(pcap, options, '_ws.expert.severity == "Note"') != []
