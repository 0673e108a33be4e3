"""rpcgate on the wire, byte for byte: raw HTTP to the plain-HTTP proxy listener of a running
rpcgate (the `gateway` fixture: proxy with the default receive window 65536 and connection
timeout 120 s, endpoint with the demo service), compared with what real Windows peers send.

Expected bytes come from the Windows RTS captures published with impacket's test suite
(tests/SMB_RPC/test_rpch.py) and the team's MS-RPCH notes (§1.7 byte examples, §2.4 echo
response). Each PDU is also decoded with impacket's own RTS classes (impacket.dcerpc.v5.rpch)
to the expected fields.
"""

import os
import socket
import struct

import pytest
from impacket.dcerpc.v5 import rpch
from impacket.uuid import uuidtup_to_bin

pytestmark = pytest.mark.timeout(60)

ECHO_PDU = bytes.fromhex("0500140310000000140000000000000040000000")
# MS-RPCH notes §2.4, the whole echo response.
ECHO_RESPONSE = (
    b"HTTP/1.1 200 Success\r\n"
    b"Connection: Keep-Alive\r\n"
    b"Content-Length: 20\r\n"
    b"Content-Type: application/rpc\r\n"
    b"\r\n" + ECHO_PDU
)
# The 4-byte body Windows clients send with an echo request.
WINDOWS_ECHO_BODY = bytes.fromhex("f8e81808")
# Windows captures: CONN/A3 with ConnectionTimeout 120000, CONN/C2 with Version 1,
# ReceiveWindowSize 65536, ConnectionTimeout 120000.
WINDOWS_CONN_A3 = bytes.fromhex("05001403100000001c000000000000000000010002000000c0d40100")
WINDOWS_CONN_C2 = bytes.fromhex(
    "05001403100000002c00000000000000000003000600000001000000000000000000010002000000c0d40100"
)

MGMT = ("AFA8BD80-7D8A-11C9-BEF4-08002B102989", "1.0")
NDR = ("8A885D04-1CEB-11C9-9FE8-08002B104860", "2.0")

# Headers as Windows' RPC over HTTP client sends them (notes §2.3).
CLIENT_HEADERS = (
    b"Accept: application/rpc\r\n"
    b"User-Agent: MSRPC\r\n"
    b"Host: 127.0.0.1\r\n"
    b"Connection: Keep-Alive\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Pragma: No-cache\r\n"
)


def request_head(method, path, content_length):
    return (
        f"{method} {path} HTTP/1.1\r\n".encode()
        + CLIENT_HEADERS
        + f"Content-Length: {content_length}\r\n\r\n".encode()
    )


def recv_exactly(sock, count):
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {count} bytes: {data!r}")
        data += chunk
    return data


def recv_head(sock):
    """The response head up to and including the blank line, read byte by byte so that no
    body byte is consumed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise AssertionError(f"connection closed inside the response head: {head!r}")
        head += byte
    return head


def recv_pdu(sock):
    header = recv_exactly(sock, 16)
    (frag_len,) = struct.unpack_from("<H", header, 8)
    return header + recv_exactly(sock, frag_len - 16)


def rts_commands(pdu):
    """(impacket's RTSHeader, [impacket command objects]) for one RTS PDU."""
    packet = rpch.RTSHeader(pdu)
    data = packet["pduData"]
    commands = []
    for _ in range(packet["NumberOfCommands"]):
        (command_type,) = struct.unpack_from("<L", data)
        command = rpch.COMMANDS[command_type](data)
        commands.append(command)
        data = data[len(command):]
    assert data == b"", f"{len(data)} bytes after the last command"
    return packet, commands


def conn_a1(vc, out_cookie, window=262144):
    return (
        struct.pack("<BBBBLHHLHH", 5, 0, 20, 3, 0x10, 76, 0, 0, 0, 4)
        + struct.pack("<LL", 6, 1)
        + struct.pack("<L", 3) + vc
        + struct.pack("<L", 3) + out_cookie
        + struct.pack("<LL", 0, window)
    )


def conn_b1(vc, in_cookie, association_group):
    return (
        struct.pack("<BBBBLHHLHH", 5, 0, 20, 3, 0x10, 104, 0, 0, 0, 6)
        + struct.pack("<LL", 6, 1)
        + struct.pack("<L", 3) + vc
        + struct.pack("<L", 3) + in_cookie
        + struct.pack("<LL", 4, 0x40000000)
        + struct.pack("<LL", 5, 300000)
        + struct.pack("<L", 12) + association_group
    )


def bind_pdu(call_id):
    context = struct.pack("<HBB", 0, 1, 0) + uuidtup_to_bin(MGMT) + uuidtup_to_bin(NDR)
    body = struct.pack("<HHLB3x", 4280, 4280, 0, 1) + context
    return struct.pack("<BBBBLHHL", 5, 0, 11, 3, 0x10, 16 + len(body), 0, call_id) + body


def request_pdu(call_id, opnum, stub):
    body = struct.pack("<LHH", len(stub), 0, opnum) + stub
    return struct.pack("<BBBBLHHL", 5, 0, 0, 3, 0x10, 16 + len(body), 0, call_id) + body


def connect(gateway):
    sock = socket.create_connection(("127.0.0.1", gateway.http_port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize("method", ["RPC_IN_DATA", "RPC_OUT_DATA"])
def test_windows_echo_request_gets_the_exact_echo_response(gateway, method):
    with connect(gateway) as sock:
        # Twice on one connection: the proxy keeps it open after an echo (notes §2.4).
        for _ in range(2):
            sock.sendall(request_head(method, "/rpc/rpcproxy.dll", 4) + WINDOWS_ECHO_BODY)
            assert recv_exactly(sock, len(ECHO_RESPONSE)) == ECHO_RESPONSE
    packet, commands = rts_commands(ECHO_PDU)
    assert packet["Flags"] == rpch.RTS_FLAG_ECHO and commands == []


class VirtualConnection:
    """One virtual connection opened by hand: OUT request + CONN/A1, IN request + CONN/B1."""

    def __init__(self, gateway):
        target = f"/rpc/rpcproxy.dll?localhost:{gateway.endpoint_port}"
        self.vc, self.out_cookie, self.in_cookie, group = (os.urandom(16) for _ in range(4))
        self.out_channel = connect(gateway)
        self.out_channel.sendall(request_head("RPC_OUT_DATA", target, 76) + conn_a1(self.vc, self.out_cookie))
        self.out_head = recv_head(self.out_channel)
        self.a3 = recv_pdu(self.out_channel)
        self.in_channel = connect(gateway)
        self.in_channel.sendall(
            request_head("RPC_IN_DATA", target, 1073741824) + conn_b1(self.vc, self.in_cookie, group)
        )
        self.c2 = recv_pdu(self.out_channel)

    def close(self):
        self.in_channel.close()
        self.out_channel.close()


@pytest.fixture
def virtual_connection(gateway):
    vc = VirtualConnection(gateway)
    yield vc
    vc.close()


def test_out_channel_answers_200_success_then_windows_conn_a3_and_c2(virtual_connection):
    head = virtual_connection.out_head
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 200 Success", head
    fields = {name.lower(): value.strip() for name, _, value in (l.partition(":") for l in lines[1:-2])}
    assert fields["content-type"] == "application/rpc", head
    assert fields["content-length"] == "1073741824", head
    assert "transfer-encoding" not in fields, head

    assert virtual_connection.a3 == WINDOWS_CONN_A3
    packet, commands = rts_commands(virtual_connection.a3)
    assert packet["Flags"] == rpch.RTS_FLAG_NONE
    assert packet["frag_len"] == 28 and packet["call_id"] == 0
    assert [type(c) for c in commands] == [rpch.ConnectionTimeout]
    assert commands[0]["ConnectionTimeout"] == 120000

    assert virtual_connection.c2 == WINDOWS_CONN_C2
    packet, commands = rts_commands(virtual_connection.c2)
    assert packet["Flags"] == rpch.RTS_FLAG_NONE
    assert [type(c) for c in commands] == [rpch.Version, rpch.ReceiveWindowSize, rpch.ConnectionTimeout]
    assert commands[0]["Version"] == 1
    assert commands[1]["ReceiveWindowSize"] == 65536
    assert commands[2]["ConnectionTimeout"] == 120000


def test_flow_control_ack_reaches_the_client_in_the_windows_format(virtual_connection):
    """After more than half the inbound proxy's window (65536) of RPC bytes on the IN channel,
    the client gets a FlowControlAckWithDestination on the OUT channel, laid out as the
    Windows capture (Flags OTHER_CMD, Destination FDClient, then the ack for its IN cookie)."""
    vc = virtual_connection
    vc.in_channel.sendall(bind_pdu(1))
    bind_ack = recv_pdu(vc.out_channel)
    assert bind_ack[2] == 12, bind_ack  # bind_ack
    # inq_if_ids takes no arguments; the padding only makes the PDUs count.
    sent = 0
    ack = None
    for call_id in range(2, 12):
        request = request_pdu(call_id, 0, bytes(4000))
        vc.in_channel.sendall(request)
        sent += len(request)
    while ack is None:
        pdu = recv_pdu(vc.out_channel)
        if pdu[2] == 20:
            packet, commands = rts_commands(pdu)
            if packet["Flags"] == rpch.RTS_FLAG_OTHER_CMD:
                ack = (pdu, packet, commands)
        else:
            assert pdu[2] in (2, 3), pdu[:16]  # response or fault to our calls
    pdu, packet, commands = ack
    print(f"FlowControlAckWithDestination after {sent} bytes: {pdu.hex()}")
    assert len(pdu) == 56 and packet["NumberOfCommands"] == 2
    # Windows: 05001403 10000000 3800 0000 00000000 0200 0200 | 0d000000 00000000 | 01000000 ...
    assert pdu[:28] == bytes.fromhex("05001403100000003800000000000000020002000d00000000000000")
    assert [type(c) for c in commands] == [rpch.Destination, rpch.FlowControlAck]
    assert commands[0]["Destination"] == rpch.FDClient
    fields = commands[1]["Ack"]
    assert 32768 <= fields["BytesReceived"] <= sent
    assert 0 < fields["AvailableWindow"] <= 65536
    assert fields["ChannelCookie"]["Cookie"] == vc.in_cookie
