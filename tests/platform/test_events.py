"""Live events are best effort (a channel-layer hiccup is logged, never raised), except the worker's
soft time limit: swallowed there, a reply ran on to the hard limit and the task was redelivered. A
push waits for the layer's Redis at most CHATNEXUS_PUSH_TIMEOUT_S (its connections have no socket
timeout), and those connections keep alive, so a Redis gone silent is noticed."""
import asyncio
import socket
import socketserver
import threading

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import InMemoryChannelLayer, channel_layers, get_channel_layer

from bots import events
from tests.channels.loopback import LoopbackServer


class RaisingLayer(InMemoryChannelLayer):
    """The channel layer, failing the way the test says (a stand-in for Redis in trouble)."""

    error: type[BaseException] = ConnectionError

    async def group_send(self, group, message):
        raise self.error("from the layer")


@pytest.fixture
def raising_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "tests.platform.test_events.RaisingLayer"}}
    channel_layers.backends.clear()
    yield RaisingLayer
    channel_layers.backends.clear()


def test_a_layer_in_trouble_is_logged_not_raised(raising_layer, caplog):
    raising_layer.error = ConnectionError
    events.push(1, "reply.delta", delta="Hi")
    assert "live event reply.delta for conversation 1 not pushed" in caplog.text


def test_the_workers_soft_time_limit_gets_through(raising_layer):
    raising_layer.error = SoftTimeLimitExceeded
    with pytest.raises(SoftTimeLimitExceeded):
        events.push(1, "reply.delta", delta="Hi")


class SilentRedis(LoopbackServer):
    """A Redis that takes connections and never answers (hung, or a proxy in front of one that is gone):
    each connection is held open, unread, until ``stop()``."""

    def __init__(self):
        self.connections, self.stopped = [], threading.Event()
        silent = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                silent.connections.append(self.request)
                silent.stopped.wait()  # then the server closes it

        self._serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))

    def stop(self):
        self.stopped.set()
        super().stop()


@pytest.fixture
def silent_redis(settings):
    """The configured channel layer (its CONFIG as settings give it), at a SilentRedis."""
    server = SilentRedis().start()
    layer = settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "address": f"redis://127.0.0.1:{server.port}/0"} for host in layer["CONFIG"]["hosts"]]
    settings.CHANNEL_LAYERS = {"default": {**layer, "CONFIG": {**layer["CONFIG"], "hosts": hosts}}}
    channel_layers.backends.clear()
    yield server
    server.stop()  # a push still waiting reads the connection's end and is done
    channel_layers.backends.clear()


def test_a_redis_that_never_answers_holds_a_push_no_longer_than_the_push_timeout(silent_redis, settings, caplog):
    """The layer has no socket timeout (settings: one broke the cancellation of a receive), so a push
    to a Redis that never answered waited as long as the connection lived: the web request or the
    reply task streaming its words hung with it. It gives up after CHATNEXUS_PUSH_TIMEOUT_S now."""
    settings.CHATNEXUS_PUSH_TIMEOUT_S = 0.5
    push = threading.Thread(target=events.push, args=(1, "reply.delta"), kwargs={"delta": "Hi"}, daemon=True)
    push.start()
    push.join(60)  # a bound far past the timeout: without one the push waits until the server stops
    assert not push.is_alive(), "the push still waits for Redis"
    assert len(silent_redis.connections) == 1  # it reached the server, which never answered
    assert ("live event reply.delta for conversation 1 not pushed: the channel layer did not answer within 0.5 s"
            in caplog.text)


def test_the_layers_connections_to_redis_keep_alive(fresh_channel_layer):
    """With no socket timeout, TCP keepalive is what notices a Redis gone without a word (its host down,
    a network cut): a socket's blocking pop then fails instead of waiting for good."""
    async def keepalive_of_a_connection_used():
        layer = get_channel_layer()
        await layer.group_send("keepalive", {"type": "nobody.listens"})
        pool = layer.connection(0).connection_pool
        connection = await pool.get_connection()  # the one the send used, back in the pool
        try:
            sock = connection._writer.transport.get_extra_info("socket")
            return (sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                    {name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                     for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT") if hasattr(socket, name)})
        finally:
            await pool.release(connection)
            await layer.close_pools()

    on, options = asyncio.run(keepalive_of_a_connection_used())
    assert on and options == {name: value for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 5),
                                                              ("TCP_KEEPCNT", 3)) if hasattr(socket, name)}
