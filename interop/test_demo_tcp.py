"""impacket and Samba against rpcgate's demo DCE/RPC service over plain ncacn_ip_tcp (no proxy).

Runs the checks of interop/impacket_demo_tcp.py and interop/samba_demo_tcp.py (both also usable
by hand) against the `demo_server` example, started on a free loopback port. Samba's Python
bindings live in the system interpreter (Debian: python3-samba); without them that test is
skipped.
"""

import subprocess
from pathlib import Path

import pytest

import impacket_demo_tcp as checks

ROOT = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"
EXAMPLE = ROOT / "target" / "debug" / "examples" / "demo_server"


@pytest.fixture(scope="module")
def demo_port(tmp_path_factory):
    subprocess.run(
        ["cargo", "build", "--locked", "-p", "rpcgate", "--example", "demo_server"],
        cwd=ROOT,
        check=True,
    )
    log = open(tmp_path_factory.mktemp("demo") / "demo_server.log", "w")
    process = subprocess.Popen(
        [str(EXAMPLE), "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={"RUST_LOG": "debug", "NO_COLOR": "1"},
    )
    # The example prints "listening on 127.0.0.1:PORT" once bound.
    line = process.stdout.readline()
    assert line.startswith("listening on "), line
    yield int(line.rsplit(":", 1)[1])
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def test_mgmt_calls(demo_port):
    checks.mgmt_calls("127.0.0.1", demo_port)


def test_rpcecho_calls(demo_port):
    checks.echo_calls("127.0.0.1", demo_port)


def test_authenticated_bind_is_refused(demo_port):
    checks.authenticated_bind("127.0.0.1", demo_port)


def samba_bindings():
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", "import samba.dcerpc.echo"],
                              capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not samba_bindings(), reason="Samba's Python bindings are not installed")
def test_samba_python_clients(demo_port):
    result = subprocess.run(
        [SYSTEM_PYTHON, str(ROOT / "interop" / "samba_demo_tcp.py"), "127.0.0.1", str(demo_port)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
