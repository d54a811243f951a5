"""Imported first by every Python client a test runs: an audit hook stops
the process (exit 3, saying where) the moment anything looks up a name or
opens a connection that is not loopback (or in a network namespace the test
built, named in LOOPBACK_ONLY_ALSO), so a client that went around the proxy
fails the test instead of reaching a real host.
"""

import ipaddress
import os
import socket
import sys


# A test that builds its own network namespaces names them here, space
# separated: CIDRs of their addresses and host names resolving into them.
ALSO = os.environ.get("LOOPBACK_ONLY_ALSO", "").split()
NETWORKS = [ipaddress.ip_network(a) for a in ALSO if "/" in a]
NAMES = {a for a in ALSO if "/" not in a}


def loopback(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host == "localhost" or host in NAMES:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return address.is_loopback or any(address in n for n in NETWORKS)


def guard(event, args):
    where = None
    if event == "socket.getaddrinfo" and not loopback(args[0]):
        where = f"looked up {args[0]!r}"
    elif event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not loopback(address[0]):
            where = f"connected to {address!r}"
    if where:
        sys.stderr.write(f"not loopback: the client {where}\n")
        sys.stderr.flush()
        os._exit(3)


sys.addaudithook(guard)
