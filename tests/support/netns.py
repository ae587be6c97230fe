"""A phone on two networks, made of Linux network namespaces, for the network-switch tests.

    phone netns                          cloud netns
    wifi  10.N.1.2/24  <── veth ──>  10.N.1.1/24  wifi
    cell  10.N.2.2/24  <── veth ──>  10.N.2.1/24  cell
                                     10.N.0.1/32  lo   (the server's address)

The phone reaches the server's one address over Wi-Fi, until `switch_to_cellular()`:
the Wi-Fi link goes down and the route moves to the cellular link, so the next
connection comes from the cellular address. The connection that was open is left
hanging, as a phone's is: nothing answers it and nothing resets it (the cloud
filters by reverse path, as carriers filter spoofed sources, so even the phone's
late packets from its Wi-Fi address never arrive). Needs root and iproute2.

The server process stays in the root namespace; only its listening socket is made
in the cloud namespace (`listening_socket`), so it keeps its database and logs.
"""

import ctypes
import os
import random
import shutil
import socket
import subprocess
import threading
import uuid

CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def in_netns(name: str, *command: str) -> None:
    subprocess.run(["ip", "netns", "exec", name, *command], check=True, capture_output=True, text=True, timeout=10)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here, or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip`"
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as error:
        return f"cannot make a network namespace: {getattr(error, 'stderr', '') or error}"
    ip("netns", "del", probe)
    return None


class PhoneNetwork:
    """The two namespaces and their links; `with PhoneNetwork() as net:` removes them at the end."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.phone, self.cloud = f"phone-{tag}", f"cloud-{tag}"
        self.links = {"wifi": f"wf{tag}", "cell": f"ce{tag}"}  # the phone's end; the cloud's adds "c"
        octet = random.randrange(64, 250)
        self.net = f"10.{octet}"
        self.server_address = f"{self.net}.0.1"
        self.addresses = {"wifi": f"{self.net}.1.2", "cell": f"{self.net}.2.2"}

    def __enter__(self) -> "PhoneNetwork":
        try:
            ip("netns", "add", self.phone)
            ip("netns", "add", self.cloud)
            for number, (name, link) in enumerate(self.links.items(), start=1):
                ip("link", "add", link, "netns", self.phone, "type", "veth", "peer", "name", link + "c", "netns", self.cloud)
                ip("-n", self.phone, "addr", "add", f"{self.net}.{number}.2/24", "dev", link)
                ip("-n", self.cloud, "addr", "add", f"{self.net}.{number}.1/24", "dev", link + "c")
                ip("-n", self.phone, "link", "set", link, "up")
                ip("-n", self.cloud, "link", "set", link + "c", "up")
            for namespace in (self.phone, self.cloud):
                ip("-n", namespace, "link", "set", "lo", "up")
            ip("-n", self.cloud, "addr", "add", f"{self.server_address}/32", "dev", "lo")
            # Strict reverse-path filtering: a packet is taken only on the link its source is routed through.
            for conf in ("all", "default", self.links["wifi"] + "c", self.links["cell"] + "c"):
                in_netns(self.cloud, "sh", "-c", f"echo 1 > /proc/sys/net/ipv4/conf/{conf}/rp_filter")
            ip("-n", self.phone, "route", "add", f"{self.server_address}/32", "via", f"{self.net}.1.1", "dev", self.links["wifi"])
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for namespace in (self.phone, self.cloud):  # deleting a namespace deletes its links
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)

    def switch_to_cellular(self) -> None:
        """Wi-Fi goes away mid-connection; the route to the server moves to the cellular link."""
        ip("-n", self.phone, "link", "set", self.links["wifi"], "down")  # takes the Wi-Fi route with it
        # And the Wi-Fi address, as a phone's goes: else the old socket's last packets would leave by the
        # cellular link with the Wi-Fi source, and so would ARP asking for the cellular gateway (which the
        # cloud's reverse-path filter ignores, stalling the new connection's first packet by a second).
        ip("-n", self.phone, "addr", "flush", "dev", self.links["wifi"])
        ip("-n", self.phone, "route", "replace", f"{self.server_address}/32", "via", f"{self.net}.2.1", "dev", self.links["cell"])

    def listening_socket(self, port: int = 0) -> socket.socket:
        """A TCP socket listening on the server's address, made inside the cloud namespace."""
        return run_in_netns(self.cloud, lambda: socket.create_server((self.server_address, port), backlog=128))

    def command(self, *args: str) -> list[str]:
        """`args` run as a process inside the phone namespace."""
        return ["ip", "netns", "exec", self.phone, *args]


def run_in_netns(name: str, make):
    """`make()` run in a thread that has entered the namespace (a socket made there stays there)."""
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict = {}

    def run() -> None:
        try:
            with open(f"/run/netns/{name}") as namespace:
                if libc.setns(namespace.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {name}")
            outcome["value"] = make()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"netns-{name}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
