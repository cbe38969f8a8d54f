"""The one place that pushes live events to browsers (builder preview, widget, inbox).

Tasks and services call ``push(conversation_id, event_type, **payload)``; consumers
forward what they receive. Nobody else calls ``get_channel_layer()``.
"""
import asyncio
import logging

from asgiref.sync import async_to_sync
from celery.exceptions import SoftTimeLimitExceeded
from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)


def group_for(conversation_id):
    return f"conversation-{conversation_id}"


def push(conversation_id, event_type, **payload):
    """Send ``{"type": "conversation.event", "event": event_type, ...}`` to the conversation's group.

    Live events are best effort: the database is the source of truth and clients
    resync from it, so a channel-layer hiccup is logged, never raised.
    """
    message = {"type": "conversation.event", "event": event_type, **payload}
    send(group_for(conversation_id), message, f"{event_type} for conversation {conversation_id}")


def send(group, message, what):
    """``message`` to every socket in ``group`` (another group than a conversation's: the widget's
    sockets of one visitor), best effort like ``push``; ``what`` names it in the log. At most
    CHATNEXUS_PUSH_TIMEOUT_S: the layer's Redis connections have no socket timeout (settings), and a
    Redis that took the connection and never answered held the request or task pushing for good."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(_group_send_within)(layer, group, message, settings.CHATNEXUS_PUSH_TIMEOUT_S)
    except SoftTimeLimitExceeded:
        raise  # the worker's time limit, arriving during a push: the task must hear it, not a log line
    except TimeoutError:
        log.warning("live event %s not pushed: the channel layer did not answer within %s s (CHATNEXUS_PUSH_TIMEOUT_S)",
                    what, settings.CHATNEXUS_PUSH_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - see push
        log.warning("live event %s not pushed", what, exc_info=True)


async def _group_send_within(layer, group, message, seconds):
    """The layer's ``group_send``, cancelled after ``seconds`` (TimeoutError). Only this push's own task
    is cancelled, in the event loop ``async_to_sync`` runs it in; redis-py drops a connection cut off
    mid-command, so none is handed out again with an answer still to come."""
    async with asyncio.timeout(seconds):
        await layer.group_send(group, message)
