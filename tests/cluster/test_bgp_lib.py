"""The BGP harness itself (tests/lib/bgp.py), before faasd uses it: three nodes on a
LAN announce one anycast /32 through their bird to a bird router; the router holds one
multipath route with the three as next hops and spreads a client's connections over
them; a node whose routes file is emptied leaves the route within seconds, a node
whose bird is killed within the BGP hold time, and one whose bird hangs (its sessions
still open) within BFD's detection time, well before the hold time."""

import json
import time
from contextlib import ExitStack

import pytest

from lib.bgp import NodeBird, Router
from lib.lan import Lan
from lib.vm import make_vm, wait_for

pytestmark = pytest.mark.cluster

ANYCAST = "10.0.0.5"
PREFIX = f"{ANYCAST}/32"
PORT = 8080

SERVER = """
import socketserver, sys
name = sys.argv[1].encode()
class Answer(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(name)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer((sys.argv[2], int(sys.argv[3])), Answer).serve_forever()
"""

CLIENT = """
import json, socket, sys
answers = []
for _ in range(int(sys.argv[3])):
    try:
        with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
            data = b""
            while chunk := s.recv(100):
                data += chunk
            answers.append(data.decode())
    except OSError as e:
        answers.append(f"error: {e}")
print(json.dumps(answers))
"""


@pytest.fixture
def anycast(tmp_path):
    """(router, client vm, {node name: (vm, bird, address)}): a router, a client and
    three nodes on one LAN; each node has ANYCAST on lo, a TCP server on it answering
    its name, and a bird announcing nothing yet."""
    with ExitStack() as stack:
        lan = Lan(tmp_path / "lan")
        stack.callback(lan.close)

        def new_vm(name):
            machine = make_vm("sandbox", tmp_path / name)
            stack.callback(machine.close)  # also kills what was spawned in it
            return machine

        router_vm = new_vm("router")
        router = Router(router_vm, tmp_path / "router-bird", lan.join(router_vm))
        stack.callback(router.stop)
        nodes = {}
        for i, name in enumerate(("n1", "n2", "n3"), start=1):
            machine = new_vm(name)
            address = lan.join(machine)
            for setting in ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"):
                machine.run(["sysctl", "-q", "-w", setting])
            machine.run(["ip", "addr", "add", PREFIX, "dev", "lo", "label", "lo:faas"])
            server = machine.spawn(["python3", "-c", SERVER, name, ANYCAST, str(PORT)],
                                   log_name="server")
            bird = NodeBird(machine, tmp_path / f"{name}-bird", address, router.address,
                            asn=65000 + i)
            stack.callback(bird.stop)
            router.add_peer(name, address, 65000 + i)
            nodes[name] = (machine, bird, address, server)
        client = new_vm("client")
        lan.join(client)
        client.run(["sysctl", "-q", "-w", "net.ipv4.conf.all.accept_redirects=0"])
        client.run(["ip", "route", "add", "10.0.0.0/8", "via", router.address])
        for name, (machine, _, _, server) in nodes.items():
            def listening():
                assert server.poll() is None, f"{name}'s server exited:\n{server.stderr_text()}"
                return machine.run(["ss", "-Hltn", f"sport = :{PORT}"]).stdout.strip()
            wait_for(listening, 10, what=f"{name}'s server to listen")
        yield router, client, {n: v[:3] for n, v in nodes.items()}


def connect(client, count):
    """The answers to `count` connections to ANYCAST:PORT made one after the other."""
    out = client.run(["python3", "-c", CLIENT, ANYCAST, str(PORT), str(count)],
                     timeout=count * 6 + 10).stdout
    return json.loads(out)


def test_nodes_share_an_anycast_address_and_leave_it_on_withdraw_and_on_death(anycast):
    router, client, nodes = anycast
    addresses = {name: address for name, (_, _, address) in nodes.items()}
    wait_for(lambda: list(router.sessions().values()) == ["Established"] * 3, 15,
             what="three established BGP sessions")
    wait_for(lambda: router.bfd_sessions() == {a: "Up" for a in addresses.values()}, 10,
             what="three BFD sessions up")
    start = time.monotonic()
    for _, bird, _ in nodes.values():
        bird.announce(PREFIX)
    router.wait_paths(PREFIX, set(addresses.values()), 10)
    print(f"\nannounced on three nodes -> three next hops: {time.monotonic() - start:.3f} s")

    answers = connect(client, 60)
    assert all(a in nodes for a in answers), answers
    assert len(set(answers)) >= 2, answers
    print("answers per node:", {n: answers.count(n) for n in sorted(nodes)})

    # n1 withdraws: its routes file emptied, bird reloaded (what faasd does).
    _, n1_bird, _ = nodes["n1"]
    start = time.monotonic()
    n1_bird.announce()
    router.wait_paths(PREFIX, {addresses["n2"], addresses["n3"]}, 5)
    print(f"routes file emptied -> path gone: {time.monotonic() - start:.3f} s")
    assert router.sessions()["n1"] == "Established"

    # n2's bird dies without a word.
    _, n2_bird, _ = nodes["n2"]
    start = time.monotonic()
    n2_bird.kill()
    router.wait_paths(PREFIX, {addresses["n3"]}, 5)
    print(f"bird SIGKILLed -> path gone: {time.monotonic() - start:.3f} s")
    assert router.paths(PREFIX) == [addresses["n3"]]
    assert set(connect(client, 10)) == {"n3"}

    # n3's bird hangs: the TCP session stays open, only BFD (3 x 100 ms) notices
    # before the 3 s hold time.
    _, n3_bird, _ = nodes["n3"]
    start = time.monotonic()
    n3_bird.freeze()
    router.wait_paths(PREFIX, set(), 2)
    print(f"bird frozen -> path gone: {time.monotonic() - start:.3f} s")
