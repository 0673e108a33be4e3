//! Request heads of real clients (shared/captures/client-bytes.md, notes §2.3) and a small
//! deterministic generator of hostile inputs, shared by this module's tests.

/// impacket 0.13.1, IN channel with Basic auth (`http.client`, HTTP/1.1, waits for 100).
pub const IMPACKET_IN: &[u8] = b"RPC_IN_DATA /rpc/rpcproxy.dll?127.0.0.1:6001 HTTP/1.1\r\n\
Host: 127.0.0.1:18080\r\n\
Accept-Encoding: identity\r\n\
User-Agent: MSRPC\r\n\
Cache-Control: no-cache\r\n\
Connection: Keep-Alive\r\n\
Expect: 100-continue\r\n\
Accept: application/rpc\r\n\
Pragma: No-cache\r\n\
Authorization: Basic UlBDSFxBZG1pbmlzdHJhdG9yOnB3\r\n\
Content-Length: 1073741824\r\n\
\r\n";

/// impacket 0.13.1, OUT channel (Content-Length 76: the CONN/A1 PDU follows the head).
pub const IMPACKET_OUT: &[u8] = b"RPC_OUT_DATA /rpc/rpcproxy.dll?127.0.0.1:6001 HTTP/1.1\r\n\
Host: 127.0.0.1:18080\r\n\
Accept-Encoding: identity\r\n\
User-Agent: MSRPC\r\n\
Cache-Control: no-cache\r\n\
Connection: Keep-Alive\r\n\
Expect: 100-continue\r\n\
Accept: application/rpc\r\n\
Pragma: No-cache\r\n\
Content-Length: 76\r\n\
\r\n";

/// impacket's NTLM negotiate leg: no query string, Content-Length 0.
pub const IMPACKET_NTLM_NEGOTIATE: &[u8] = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\n\
Host: 127.0.0.1:18080\r\n\
Accept-Encoding: identity\r\n\
User-Agent: MSRPC\r\n\
Cache-Control: no-cache\r\n\
Connection: Keep-Alive\r\n\
Expect: 100-continue\r\n\
Accept: application/rpc\r\n\
Pragma: No-cache\r\n\
Content-Length: 0\r\n\
Authorization: NTLM TlRMTVNTUAABAAAABYIIogAAAAAoAAAAAAAAACgAAAAGAbEdAAAADw==\r\n\
\r\n";

/// Samba 4.17 `dcerpc_roh`, OUT channel: HTTP/1.0, keep-alive, Host without port.
pub const SAMBA_OUT: &[u8] = b"RPC_OUT_DATA /rpc/rpcproxy.dll?127.0.0.1:6001 HTTP/1.0\r\n\
Accept: application/rpc\r\n\
User-Agent: MSRPC\r\n\
Host: 127.0.0.1\r\n\
Connection: keep-alive\r\n\
Content-Length: 76\r\n\
Cache-Control: no-cache\r\n\
Pragma: no-cache\r\n\
\r\n";

/// Samba 4.17, IN channel.
pub const SAMBA_IN: &[u8] = b"RPC_IN_DATA /rpc/rpcproxy.dll?127.0.0.1:6001 HTTP/1.0\r\n\
Accept: application/rpc\r\n\
User-Agent: MSRPC\r\n\
Host: 127.0.0.1\r\n\
Connection: keep-alive\r\n\
Content-Length: 1073741824\r\n\
Cache-Control: no-cache\r\n\
Pragma: no-cache\r\n\
\r\n";

/// FreeRDP 2.11 gateway transport, IN channel with its load-balancing pragmas.
pub const FREERDP_IN: &[u8] = b"RPC_IN_DATA /rpc/rpcproxy.dll?localhost:3388 HTTP/1.1\r\n\
Cache-Control: no-cache\r\n\
Connection: Keep-Alive\r\n\
Content-Length: 1073741824\r\n\
User-Agent: MSRPC\r\n\
Host: 127.0.0.1\r\n\
Pragma: ResourceTypeUuid=44e265dd-7daf-42cd-8560-3cdb6e7a2729, SessionId=fbd9c34f-397d-471d-a73f-f84a4d3e1f5a\r\n\
Accept: application/rpc\r\n\
Authorization: NTLM TlRMTVNTUAADAAAAGAAYAEgAAAA=\r\n\
\r\n";

/// Windows echo request: Content-Length 4 (body `f8 e8 18 08` follows).
pub const WINDOWS_ECHO: &[u8] = b"RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\n\
Accept: application/rpc\r\n\
User-Agent: MSRPC\r\n\
Host: mail.contoso.com\r\n\
Content-Length: 4\r\n\
Connection: Keep-Alive\r\n\
Cache-Control: no-cache\r\n\
Pragma: No-cache\r\n\
\r\n";

/// Every fixture above.
pub const ALL: &[&[u8]] = &[
    IMPACKET_IN,
    IMPACKET_OUT,
    IMPACKET_NTLM_NEGOTIATE,
    SAMBA_OUT,
    SAMBA_IN,
    FREERDP_IN,
    WINDOWS_ECHO,
];

/// xorshift64*: deterministic, so a failure found by a test reproduces.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound.max(1)).unwrap_or(1)).unwrap_or(0)
    }

    pub fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }

    /// Bytes that often look like HTTP: either a mutated fixture or structured noise.
    pub fn http_like(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"\r\n",
            b"\n",
            b" ",
            b"\t",
            b":",
            b"?",
            b"[",
            b"]",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"Content-Length: ",
            b"Transfer-Encoding: chunked",
            b"Connection: close",
            b"0",
            b"99999999999999999999999",
            b"RPC_IN_DATA",
            b"RPC_OUT_DATA",
            b"/rpc/rpcproxy.dll",
            b"\xff\xfe",
            b"Host: x",
            b"Expect: 100-continue",
            b"-",
            b",",
        ];
        let mut out = if self.below(2) == 0 {
            ALL[self.below(ALL.len())].to_vec()
        } else {
            Vec::new()
        };
        for _ in 0..self.below(12) {
            let at = self.below(out.len() + 1);
            match self.below(4) {
                0 => {
                    let piece = PIECES[self.below(PIECES.len())];
                    out.splice(at..at, piece.iter().copied());
                }
                1 if at < out.len() => {
                    out[at] = self.byte();
                }
                2 if at < out.len() => {
                    out.truncate(at);
                }
                _ => out.insert(at, self.byte()),
            }
        }
        out
    }
}
