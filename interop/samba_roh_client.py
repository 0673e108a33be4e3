#!/usr/bin/python3
"""Samba's own RPC over HTTP client (dcerpc_roh) through an rpcgate proxy to Samba's samr.

Needs Samba's Python bindings (Debian: python3-samba), in the system interpreter:

    /usr/bin/python3 interop/samba_roh_client.py ENDPOINT_PORT PROXY_PORT basic|ntlm \\
        USER DOMAIN  < password-on-stdin

Samba speaks HTTP/1.0 with keep-alive, puts `?server:port` on every leg and uses the same
credentials for HTTP (Basic, or NTLM with Content-Length 0 legs) and for its NTLM bind to samr.
Prints the domains samr's EnumDomains returns, one per line.
"""

import sys

from samba import credentials
from samba.dcerpc import samr, security
from samba.param import LoadParm


def main():
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        return 2
    port, proxy_port, http_auth, user, domain = sys.argv[1:]
    lp = LoadParm()
    creds = credentials.Credentials()
    creds.guess(lp)
    creds.set_username(user)
    creds.set_domain(domain)
    creds.set_password(sys.stdin.readline().rstrip("\n"))
    binding = (f"ncacn_http:127.0.0.1[{port},RpcProxy=127.0.0.1:{proxy_port},"
               f"HttpUseTls=false,HttpAuthOption={http_auth}]")
    conn = samr.samr(binding, lp, creds)
    handle = conn.Connect2(None, security.SEC_FLAG_MAXIMUM_ALLOWED)
    _, domains, _ = conn.EnumDomains(handle, 0, 100)
    for entry in domains.entries:
        print(entry.name.string)
    return 0


if __name__ == "__main__":
    sys.exit(main())
