"""The widget's own live push: to every open socket of one visitor, not of one conversation.

``bots.events.push`` reaches the sockets listening to a conversation. A visitor's tab that
opened before their conversation existed (or while the team erased it) listens to none, or
to a dead one; when a conversation starts from another tab (a message on its socket, a file
over HTTP), ``follow`` tells each of the visitor's sockets to look again and listen to it
(consumer.py; the socket asks the database, the word may arrive after the conversation was erased).
Best effort like ``events.push`` (``events.send``): the database is the truth, and a socket that missed this
gets the conversation with the history frame of its next message.
"""
import re

from bots import events

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")  # what a group name may not hold


def visitor_group(bot_id: int, visitor_id: str) -> str:
    """The group of one visitor's open widget sockets on one bot."""
    return f"widget-{bot_id}-{_UNSAFE.sub('_', visitor_id)[:64]}"


def follow(bot_id: int, visitor_id: str, conversation_id: int) -> None:
    """Tell the visitor's sockets that their conversation is ``conversation_id`` (consumer.widget_conversation)."""
    events.send(visitor_group(bot_id, visitor_id), {"type": "widget.conversation", "conversation": conversation_id},
                f"widget.conversation {conversation_id} for a visitor's sockets")
