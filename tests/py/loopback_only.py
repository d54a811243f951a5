"""Imported first by every Python client a test runs: an audit hook stops
the process (exit 3, saying where) the moment anything looks up a name or
opens a connection that is not loopback, so a client that went around the
proxy fails the test instead of reaching a real host.
"""

import ipaddress
import os
import socket
import sys


def loopback(host):
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


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
