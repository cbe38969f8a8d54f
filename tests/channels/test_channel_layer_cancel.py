"""The channel layer as ``settings.CHANNEL_LAYERS`` configures it: a cancelled receive ends, an idle one waits.

Every open websocket's consumer reads its channel with the layer's ``receive``. Closing the socket
cancels that read (channels' ``await_many_dispatch``), and so does the end of an event loop
(``asyncio.run`` cancels what is left). On Python 3.11 ``asyncio.wait_for`` drops a cancellation
that lands just after the task it waits for finished (CPython gh-86296, fixed in 3.12), and redis-py
sends every command through ``wait_for`` when the connection has a ``socket_timeout``. A receive
cancelled at that moment went on popping its channel every 5 s for ever: the consumer never ended
(a test once hung 300 s in ``asyncio.run``'s cancellation). Here the receive is cancelled at each
moment one of the tasks it starts finishes (its lock, its queue, each command redis-py writes), then
a message is sent to its channel: a receive that went on returns it.
"""
import asyncio
import uuid

import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils.module_loading import import_string


def layer_named(name):
    """The configured layer, its Redis connections named ``name`` (CLIENT LIST tells them apart)."""
    conf = settings.CHANNEL_LAYERS["default"]
    hosts = [{**host, "client_name": name} for host in conf["CONFIG"]["hosts"]]
    return import_string(conf["BACKEND"])(**{**conf["CONFIG"], "hosts": hosts})


def waits_in_redis(client, name):
    """A connection named ``name`` is blocked in Redis, popping a channel."""
    return any(c.get("name") == name and c.get("cmd") == "bzpopmin" and "b" in c.get("flags", "")
               for c in client.client_list())


def creation(task):
    """asyncio names the tasks it creates Task-1, Task-2, ... in turn."""
    number = task.get_name().rpartition("-")[2]
    return int(number) if number.isdigit() else 0


async def cancel_as_a_task_it_started_ends(n, client):
    """Start a receive; cancel it the moment task ``n`` (from 0) of those it started finishes; then send
    to its channel. The ended receive, or None where it waited in Redis before starting task ``n``."""
    name = f"cancel-{n}-{uuid.uuid4().hex[:8]}"
    layer = layer_named(name)
    channel = await layer.new_channel()
    receive = asyncio.ensure_future(layer.receive(channel))
    seen, started, cancelled = asyncio.all_tasks(), [], []
    try:
        while not cancelled:
            await asyncio.sleep(0)  # one turn of the loop: every task that starts is seen before it runs
            for task in sorted(asyncio.all_tasks() - seen, key=creation):
                seen.add(task)
                started.append(task)
                if len(started) == n + 1:
                    task.add_done_callback(lambda _: cancelled.append(receive.cancel()))
            if len(started) <= n and waits_in_redis(client, name):
                return None
        assert cancelled == [True]  # it was still receiving
        await layer.send(channel, {"type": "sent.after.the.cancel"})
        await asyncio.wait([receive])
        return receive
    finally:
        if not receive.done():
            receive.cancel()
            await layer.send(channel, {"type": "the.end"})  # for a receive that dropped this cancel too
            await asyncio.wait([receive])
        await layer.close_pools()


def test_a_receive_cancelled_at_any_step_ends_cancelled():
    async def every_step():
        client = redis.Redis.from_url(settings.REDIS_URL)
        receives = []
        while (receive := await cancel_as_a_task_it_started_ends(len(receives), client)) is not None:
            receives.append(receive)
        return receives

    receives = async_to_sync(every_step)()
    assert len(receives) >= 2  # its lock and its queue at least: cancelled mid-receive, not before it began
    went_on = {n: receive.result() for n, receive in enumerate(receives) if not receive.cancelled()}
    assert went_on == {}


def test_an_idle_receive_outwaits_the_layers_blocking_pop():
    """redis-py 8 times a read out after 5 s by default, which ended every idle socket's receive (and the
    socket) every 5 s (django/channels_redis#422): a receive waits as long as no message comes."""
    async def wait_then_send():
        layer = layer_named(f"idle-{uuid.uuid4().hex[:8]}")
        channel = await layer.new_channel()
        receive = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(layer.brpop_timeout * 2 + 1)  # two blocking pops came back empty
        await layer.send(channel, {"type": "late"})
        try:
            return await receive
        finally:
            await layer.close_pools()

    assert async_to_sync(wait_then_send)() == {"type": "late"}

