#!/usr/bin/env python3
"""impacket against rpcgate's demo DCE/RPC service over plain ncacn_ip_tcp (no proxy).

Usage:
    cargo run -p rpcgate --example demo_server -- 127.0.0.1:4135 &
    .venv/bin/python interop/impacket_demo_tcp.py 127.0.0.1 4135

Binds to the DCE management interface with impacket's DCERPCTransportFactory and calls
hinq_if_ids, hinq_stats, hinq_princ_name and his_server_listening, then binds rpcecho on a
second connection and calls AddOne, a fragmented EchoData and SourceData with raw stubs, and
checks the refusals (NDR64-only bind, unknown opnum, NTLM bind). Prints every answer and exits
non-zero on the first mismatch.
"""

import struct
import sys

from impacket.dcerpc.v5 import mgmt, transport
from impacket.dcerpc.v5.rpcrt import RPC_C_AUTHN_LEVEL_PKT_PRIVACY, DCERPCException
from impacket.uuid import bin_to_uuidtup, uuidtup_to_bin

MGMT = ("AFA8BD80-7D8A-11C9-BEF4-08002B102989", "1.0")
RPCECHO = ("60A15EC5-4DE8-11D7-A637-005056A20182", "1.0")


class Mismatch(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Mismatch(what)
    print(f"ok: {what}")


def connect(host, port, interface):
    rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{host}[{port}]")
    dce = rpc.get_dce_rpc()
    dce.connect()
    dce.bind(interface)
    return dce


def mgmt_calls(host, port):
    dce = connect(host, port, mgmt.MSRPC_UUID_MGMT)
    try:
        resp = mgmt.hinq_if_ids(dce)
        resp.dump()
        found = {
            (uuid.upper(), version)
            for uuid, version in (
                bin_to_uuidtup(entry["Data"].getData())
                for entry in resp["if_id_vector"]["if_id"]
            )
        }
        check(resp["status"] == 0, "inq_if_ids status 0")
        check(resp["if_id_vector"]["count"] == 2, "inq_if_ids count 2")
        check(found == {MGMT, RPCECHO}, f"inq_if_ids lists mgmt and rpcecho: {sorted(found)}")

        resp = mgmt.hinq_stats(dce)
        resp.dump()
        check(resp["status"] == 0, "inq_stats status 0")
        check(resp["count"] == 4 and len(resp["statistics"]) == 4, "inq_stats has 4 counters")
        calls_in, calls_out, pkts_in, pkts_out = resp["statistics"]
        check(calls_in >= 2 and pkts_in >= 3 and pkts_out >= 2, "inq_stats counted our calls")

        resp = mgmt.hinq_princ_name(dce)
        resp.dump()
        check(resp["status"] == 0, "inq_princ_name status 0")
        check(b"".join(resp["princ_name"]) == b"\x00",
              f"inq_princ_name is the empty name: {resp['princ_name']!r}")

        resp = mgmt.his_server_listening(dce)
        resp.dump()
        check(resp["status"] == 0, "is_server_listening status 0")

        try:
            mgmt.hstop_server_listening(dce)
            raise Mismatch("stop_server_listening was not refused")
        except DCERPCException as e:
            check("rpc_s_access_denied" in str(e), f"stop_server_listening refused: {e}")

        # A second interface on the same association: alter_context (its answer carries an
        # empty secondary address, which impacket must accept).
        echo = dce.alter_ctx(uuidtup_to_bin(RPCECHO))
        echo.call(0, struct.pack("<L", 7))
        answer = echo.recv()
        check(answer == struct.pack("<L", 8), "AddOne(7) = 8 after alter_context")
    finally:
        dce.disconnect()

    # NDR64 only: the demo speaks NDR 2.0, so the context is rejected with reason 2.
    rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{host}[{port}]")
    dce = rpc.get_dce_rpc()
    dce.connect()
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT,
                 transfer_syntax=("71710533-BEBA-4937-8319-B5DBEF9CCC36", "1.0"))
        raise Mismatch("an NDR64-only bind was accepted")
    except DCERPCException as e:
        check("proposed_transfer_syntaxes_not_supported" in str(e), f"NDR64 bind rejected: {e}")
    finally:
        dce.disconnect()


def echo_calls(host, port):
    dce = connect(host, port, uuidtup_to_bin(RPCECHO))
    try:
        dce.call(0, struct.pack("<L", 41))
        answer = dce.recv()
        check(answer == struct.pack("<L", 42), f"AddOne(41) = {struct.unpack('<L', answer)[0]}")

        data = bytes((i * 7) & 0xFF for i in range(100_000))
        dce.call(1, struct.pack("<LL", len(data), len(data)) + data)
        answer = dce.recv()
        check(answer == struct.pack("<L", len(data)) + data,
              f"EchoData of {len(data)} bytes, fragmented both ways, comes back intact")

        dce.call(3, struct.pack("<L", 1000))
        answer = dce.recv()
        check(answer == struct.pack("<L", 1000) + bytes(i & 0xFF for i in range(1000)),
              "SourceData(1000) is the i & 0xff pattern")

        try:
            dce.call(99, b"")
            dce.recv()
            raise Mismatch("opnum 99 did not fault")
        except DCERPCException as e:
            check("nca_s_op_rng_error" in str(e), f"opnum 99 faults: {e}")
    finally:
        dce.disconnect()


def authenticated_bind(host, port):
    # The demo is anonymous: an NTLM bind gets bind_nak(authentication type not recognized).
    rpc = transport.DCERPCTransportFactory(f"ncacn_ip_tcp:{host}[{port}]")
    rpc.set_credentials("user", "password", "DOMAIN")
    dce = rpc.get_dce_rpc()
    dce.set_auth_level(RPC_C_AUTHN_LEVEL_PKT_PRIVACY)
    dce.connect()
    try:
        dce.bind(mgmt.MSRPC_UUID_MGMT)
        raise Mismatch("an authenticated bind was accepted")
    except DCERPCException as e:
        check("Authentication type not recognized" in str(e), f"NTLM bind refused: {e}")
    finally:
        dce.disconnect()


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        mgmt_calls(host, port)
        echo_calls(host, port)
        authenticated_bind(host, port)
    except Mismatch as e:
        print(f"MISMATCH: {e}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
