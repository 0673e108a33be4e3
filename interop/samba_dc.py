"""A throwaway Samba AD domain controller on loopback, for the interop suite.

`SambaDC(directory)` provisions a new domain into `directory` with `samba-tool domain
provision` (about 4 s) and runs `samba -i` on it as a child process (ready after about 2 s);
`stop()` ends it and `cleanup()` removes the domain's files (the logs stay). Needs root and
Debian's samba, samba-dsdb-modules, samba-vfs-modules and samba-ad-provision packages
(scripts/test-all setup installs them), and impacket (the project's .venv) to read the RPC
ports. Usable by hand:

    .venv/bin/python interop/samba_dc.py /tmp/dc     # provisions, starts, prints the ports

The DC listens on 127.0.0.1 and ::1 only (`interfaces = lo`, `bind interfaces only = yes`) and
runs two services: `rpc` (the endpoint mapper on 135 and the RPC servers) and `ldap` (389,
636, 3268, 3269: the directory). No DNS server (port 53), NetBIOS, KDC, SMB file server or
winbindd. `rpc server port = 49152` pins the port of the multi-process RPC servers (netlogon);
the single-process ones (samr, lsarpc, drsuapi, ...) share one more port, the first free one
of `rpc server dynamic port range` (49153 on an idle machine). `rpc_ports()` reads the actual
ports from Samba's endpoint mapper. Nothing is written outside `directory`: pid files, sockets
and logs included.

The domain: realm RPCGATE.TEST, NetBIOS domain RPCGATE, DC name DC1, administrator
RPCGATE\\Administrator with the password in PASSWORD, RFC 2307 attributes enabled.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REALM = "RPCGATE.TEST"
DOMAIN = "RPCGATE"
HOST_NAME = "dc1"
ADMIN = "Administrator"
PASSWORD = "Rpcgate-Admin-1"

EPMAPPER_PORT = 135
LDAP_PORT = 389
RPC_SERVER_PORT = 49152
# The fixed TCP ports of the `ldap` service: LDAP, LDAPS, global catalog plain and TLS.
LDAP_PORTS = (LDAP_PORT, 636, 3268, 3269)

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"

# Interfaces whose ncacn_ip_tcp ports rpc_ports() reports (uuid, major version).
INTERFACES = {
    "samr": ("12345778-1234-abcd-ef00-0123456789ac", 1),
    "lsarpc": ("12345778-1234-abcd-ef00-0123456789ab", 0),
    "netlogon": ("12345678-1234-abcd-ef00-01234567cffb", 1),
    "drsuapi": ("e3514235-4b06-11d1-ab04-00c04fc2dcd2", 4),
}


def installed():
    """Whether this machine can run the DC: Samba's binaries and the provisioning data."""
    return (
        os.access(SAMBA, os.X_OK)
        and os.access(SAMBA_TOOL, os.X_OK)
        and Path("/usr/share/samba/setup/provision_basedn.ldif").exists()
    )


def port_in_use(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class SambaError(RuntimeError):
    pass


class SambaDC:
    """One provisioned domain in `directory` and, once started, its running `samba`."""

    def __init__(self, directory, services=("rpc", "ldap"), max_runtime=3600):
        self.directory = Path(directory)
        self.target = self.directory / "dc"
        self.run_dir = self.target / "run"
        self.config = self.target / "etc" / "smb.conf"
        self.log_path = self.directory / "samba.log"
        self.provision_log_path = self.directory / "provision.log"
        self.services = tuple(services)
        self.max_runtime = max_runtime
        self.process = None
        self.log = None
        self.ports = {}
        self.provision_seconds = None
        self.start_seconds = None
        self.realm = REALM
        self.domain = DOMAIN
        self.admin = ADMIN
        self.password = PASSWORD
        self.host = "127.0.0.1"

    # --- provisioning -------------------------------------------------------------------

    def options(self):
        """The smb.conf options given to the provisioning, so they land in its smb.conf."""
        run = self.run_dir
        return {
            "interfaces": "lo",
            "bind interfaces only": "yes",
            "server services": ", ".join(self.services),
            "rpc server port": str(RPC_SERVER_PORT),
            # Everything Samba would otherwise put under /run/samba and /var/log/samba.
            "pid directory": str(run),
            "ncalrpc dir": str(run / "ncalrpc"),
            "winbindd socket directory": str(run / "winbindd"),
            "ntp signd socket directory": str(run / "ntp_signd"),
            "log file": str(self.directory / "samba.log.%m"),
            # Level 1, and one line for each authentication (user, service, status).
            "log level": "1 auth_audit:3",
        }

    def provision(self):
        """Provision a new domain, replacing whatever an earlier run left in the directory."""
        if self.process is not None:
            raise SambaError("the DC is running; stop it before provisioning again")
        shutil.rmtree(self.target, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True)
        command = [
            SAMBA_TOOL, "domain", "provision",
            f"--targetdir={self.target}",
            f"--realm={REALM}",
            f"--domain={DOMAIN}",
            f"--host-name={HOST_NAME}",
            "--host-ip=127.0.0.1",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            f"--adminpass={PASSWORD}",
        ]
        command += [f"--option={name} = {value}" for name, value in self.options().items()]
        start = time.monotonic()
        with open(self.provision_log_path, "w") as log:
            result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=300)
        self.provision_seconds = time.monotonic() - start
        if result.returncode != 0:
            raise SambaError(
                f"samba-tool domain provision failed (exit {result.returncode}):\n"
                + tail(self.provision_log_path, 40)
            )
        return self.provision_seconds

    # --- running ------------------------------------------------------------------------

    def start(self, timeout=60.0):
        """Start `samba -i` on the provisioned domain and wait until its RPC servers answer."""
        if not self.config.exists():
            raise SambaError(f"no provisioned domain in {self.target}; call provision() first")
        fixed = [EPMAPPER_PORT, RPC_SERVER_PORT]
        if "ldap" in self.services:
            fixed += LDAP_PORTS
        busy = [port for port in fixed if port_in_use(port)]
        if busy:
            raise SambaError(
                f"loopback TCP port(s) {busy} already in use: another Samba or directory "
                "server runs on this machine; stop it first"
            )
        self.log = open(self.log_path, "w")
        start = time.monotonic()
        # -i: foreground, log to stdout, and exit when stdin reaches end of file, so the DC
        # also goes away when this process dies without calling stop(). --maximum-runtime is
        # a second safety net. start_new_session: stop() can signal samba's whole group.
        self.process = subprocess.Popen(
            [
                SAMBA, "-i",
                f"--configfile={self.config}",
                f"--maximum-runtime={self.max_runtime}",
            ],
            stdin=subprocess.PIPE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(start + timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - start
        return self.start_seconds

    def _wait_ready(self, deadline):
        needed = [EPMAPPER_PORT, RPC_SERVER_PORT]
        if "ldap" in self.services:
            needed.append(LDAP_PORT)
        last_error = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SambaError(
                    f"samba exited with status {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if all(port_in_use(port) for port in needed):
                try:
                    ports = self.rpc_ports()
                    if all(port_in_use(port) for port in set(ports.values())):
                        self.ports = ports
                        return
                except Exception as error:  # the endpoint mapper is not ready yet
                    last_error = error
            time.sleep(0.1)
        raise SambaError(f"samba did not answer in time (last error: {last_error!r}):\n"
                         + self.log_tail())

    def rpc_ports(self):
        """{interface name: ncacn_ip_tcp port} as Samba's endpoint mapper answers ept_map."""
        from impacket.dcerpc.v5 import epm
        from impacket.uuid import uuidtup_to_bin

        ports = {}
        for name, (uuid, major) in INTERFACES.items():
            binding = epm.hept_map(self.host, uuidtup_to_bin((uuid, f"{major}.0")),
                                   protocol="ncacn_ip_tcp")
            ports[name] = int(binding.rsplit("[", 1)[1].rstrip("]"))
        return ports

    def stop(self, timeout=20.0):
        if self.process is None:
            return
        if self.process.poll() is None:
            # The root process passes SIGTERM on to its process group (every forked task).
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Workers that outlived the root process (they share its process group).
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.stdin:
            self.process.stdin.close()
        self.process = None
        if self.log:
            self.log.close()
            self.log = None

    def cleanup(self):
        """Remove the domain's databases and keys; keep the logs."""
        self.stop()
        shutil.rmtree(self.target, ignore_errors=True)

    # --- diagnostics --------------------------------------------------------------------

    def log_tail(self, lines=100):
        if self.log:
            self.log.flush()
        return tail(self.log_path, lines)


def tail(path, lines):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"({path}: {error})"


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    if not installed():
        print("Samba's AD DC packages are not installed: run scripts/test-all setup",
              file=sys.stderr)
        return 1
    dc = SambaDC(sys.argv[1])
    print(f"provisioned {REALM} in {dc.provision():.1f} s into {dc.target}")
    print(f"started in {dc.start():.1f} s, log {dc.log_path}")
    print(f"endpoint mapper 127.0.0.1:{EPMAPPER_PORT}, LDAP 127.0.0.1:{LDAP_PORT}")
    for name, port in dc.ports.items():
        print(f"{name:9} ncacn_ip_tcp:127.0.0.1[{port}]")
    print(f"administrator {DOMAIN}\\{ADMIN} password {PASSWORD}; Ctrl-C stops the DC")
    try:
        dc.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
