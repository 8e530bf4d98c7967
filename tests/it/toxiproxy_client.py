"""Toxiproxy's Python client (the toxiproxy-python package, unchanged)
driving `holdfast chaos proxy`: run by tests/it/chaos_proxy.rs as
`python toxiproxy_client.py API_PORT UPSTREAM`. Each step's effect is
measured on a real connection; any failure exits non-zero."""

import os
import socket
import sys
import time

from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import NotFound, ProxyExists

api_port, upstream = int(sys.argv[1]), sys.argv[2]


def round_trip(listen, payload=b"ping"):
    """Seconds for one echo of `payload` through `listen` (host:port)."""
    host, port = listen.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.monotonic()
        conn.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = conn.recv(65536)
            assert chunk, "closed early"
            got += chunk
        took = time.monotonic() - start
    assert got == payload, "echo changed the bytes"
    return took


def quickest(listen, payload=b"ping"):
    """The quickest of three round trips: a loaded machine only adds delay
    to a sample, so the minimum shows what the proxy does."""
    return min(round_trip(listen, payload) for _ in range(3))


def refused(listen):
    host, port = listen.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def step(name):
    print("step:", name, flush=True)


server = Toxiproxy()
server.update_api_consumer("127.0.0.1", api_port)
assert server.running()
step("version " + server.version().decode())

step("create")
proxy = server.create(upstream=upstream, name="echo")
assert proxy.enabled is True
assert quickest(proxy.listen) < 0.19
try:
    server.create(upstream=upstream, name="echo")
    raise AssertionError("a second proxy of the same name")
except ProxyExists:
    pass

step("add a latency toxic")
proxy.add_toxic(type="latency", attributes={"latency": 200})
toxic = proxy.get_toxic("latency_downstream")
assert toxic.type == "latency" and toxic.attributes["latency"] == 200, vars(toxic)
took = quickest(proxy.listen)
print("  round trip with latency 200 ms: %.1f ms" % (took * 1000))
assert 0.199 <= took <= 0.39, took

step("update it (the client's own API consumer, as its users do)")
APIConsumer.post("/proxies/echo/toxics/latency_downstream",
                 json={"attributes": {"latency": 400}})
took = quickest(proxy.listen)
print("  round trip with latency 400 ms: %.1f ms" % (took * 1000))
assert took >= 0.399, took

step("add an upstream toxic, list them")
proxy.add_toxic(type="bandwidth", stream="upstream", name="slow_up",
                attributes={"rate": 100})
names = sorted(proxy.toxics().keys())
assert names == ["latency_downstream", "slow_up"], names

step("remove a toxic")
assert proxy.destroy_toxic("latency_downstream")
assert sorted(proxy.toxics().keys()) == ["slow_up"]
took = quickest(proxy.listen)
assert took < 0.19, took
try:
    proxy.destroy_toxic("latency_downstream")
    raise AssertionError("removed a toxic twice")
except NotFound:
    pass

step("disable: connections refused; enable again")
with proxy.down():
    assert refused(proxy.listen)
    assert server.get_proxy("echo").enabled is False
assert quickest(proxy.listen) < 0.19

step("reset: every toxic gone, every proxy enabled")
proxy.add_toxic(type="timeout", attributes={"timeout": 0})
proxy.disable()
assert server.reset()
assert server.get_proxy("echo").enabled is True
assert proxy.toxics() == {}
assert quickest(proxy.listen) < 0.19

step("populate")
made = server.populate([
    {"name": "one", "upstream": upstream, "listen": "127.0.0.1:0"},
    {"name": "two", "upstream": upstream, "listen": "127.0.0.1:0"},
])
assert sorted(p.name for p in made) == ["one", "two"]
for p in made:
    assert quickest(p.listen, os.urandom(1000)) < 0.19
assert sorted(server.proxies().keys()) == ["echo", "one", "two"]

step("destroy all")
server.destroy_all()
assert server.proxies() == {}
assert refused(proxy.listen)
print("all steps passed")
