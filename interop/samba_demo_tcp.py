#!/usr/bin/python3
"""Samba's Python RPC clients against rpcgate's demo service over ncacn_ip_tcp.

Needs Samba's Python bindings (Debian: python3-samba), which live in the system interpreter,
not in the project's venv:

    cargo run -p rpcgate --example demo_server -- 127.0.0.1:4135 &
    /usr/bin/python3 interop/samba_demo_tcp.py 127.0.0.1 4135

Calls rpcecho AddOne, EchoData (fragmented both ways), SinkData and SourceData with
`samba.dcerpc.echo`, and mgmt inq_if_ids, inq_stats, is_server_listening and inq_princ_name with
`samba.dcerpc.mgmt`; exits non-zero on the first mismatch. Samba's client also offers the
bind-time feature negotiation context, which the demo answers with negotiate_ack.
"""

import sys

from samba.dcerpc import echo, mgmt
from samba.param import LoadParm

MGMT = ("afa8bd80-7d8a-11c9-bef4-08002b102989", 1)
RPCECHO = ("60a15ec5-4de8-11d7-a637-005056a20182", 1)


def check(condition, what):
    if not condition:
        print(f"MISMATCH: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    binding = f"ncacn_ip_tcp:{sys.argv[1]}[{sys.argv[2]}]"
    lp = LoadParm()

    conn = echo.rpcecho(binding, lp)
    check(conn.AddOne(41) == 42, "AddOne(41) = 42")
    check(conn.AddOne(0xFFFFFFFF) == 0, "AddOne wraps")
    data = [(i * 7) & 0xFF for i in range(300_000)]
    check(list(conn.EchoData(data)) == data, "EchoData of 300000 bytes comes back intact")
    conn.SinkData([1, 2, 3] * 1000)
    print("ok: SinkData")
    check(list(conn.SourceData(1000)) == [i & 0xFF for i in range(1000)],
          "SourceData(1000) is the i & 0xff pattern")

    m = mgmt.mgmt(binding, lp)
    ids = {(str(entry.id.uuid), entry.id.if_version) for entry in m.inq_if_ids().if_id}
    check(ids == {MGMT, RPCECHO}, f"inq_if_ids lists mgmt and rpcecho: {sorted(ids)}")
    check(m.is_server_listening() == (0, 1), "is_server_listening: status 0, true")
    stats = m.inq_stats(4, 0)
    check(stats.count == 4 and len(stats.statistics) == 4, "inq_stats has 4 counters")
    check(m.inq_princ_name(0, 1) == "", "inq_princ_name is the empty name")
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
