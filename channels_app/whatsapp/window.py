"""WhatsApp's customer-service window: free text reaches a customer only within 24 hours of
their last message; after that only an approved template does (Twilio error 63016).

The inbox asks ``notice(conversation)`` what to tell the agent; an agent re-opens a closed
window by sending the channel's re-engagement template (``reengage``), whose ``{{1}}`` is
the customer's name. When the customer answers, the window is open again.

A customer who opted out (wrote STOP: inbound.is_opt_out) gets nothing at all, not even the
template, until they write again: WhatsApp's policy asks that an opt-out is honoured, and Twilio
handles STOP itself on SMS only. The state is kept in the conversation's meta (``OPT_OUT``).
"""
from datetime import timedelta

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from bots import services
from bots.models import Conversation, Message

from ..models import ChannelConfig

WINDOW = timedelta(hours=24)


def closes_at(conversation):
    """When the window closes (or closed); None before the customer wrote at all."""
    last = (Message.objects.filter(conversation=conversation, direction=Message.Direction.INBOUND)
            .order_by("-created").values_list("created", flat=True).first())
    return last + WINDOW if last else None


def template_sid(conversation) -> str:
    config = ChannelConfig.objects.filter(bot_id=conversation.bot_id, kind="whatsapp").first()
    return (config.settings.get("reengage_content_sid") or "").strip() if config else ""


def notice(conversation, now=None) -> dict | None:
    """{"closes_at", "template": content SID or ""} once the window has closed; None while it is open."""
    now = now or timezone.now()
    end = closes_at(conversation)
    if end is None or end > now:
        return None
    return {"closes_at": end, "template": template_sid(conversation)}


def reengage(conversation, user):
    """Send the re-engagement template as the agent's message; None when the channel has none."""
    sid = template_sid(conversation)
    if not sid:
        return None
    name = conversation.contact_name or "there"
    return services.agent_reply(conversation, user, f"(WhatsApp template {sid} sent to re-open the conversation)",
                                meta={"content_sid": sid, "content_variables": {"1": name}})


# ---------------------------------------------------------------------------
# Opt-out

OPT_OUT = "whatsapp_opt_out"  # Conversation.meta: {"at": ISO time, "text": what the customer wrote}
REFUSED = ("the customer opted out of WhatsApp messages (they wrote {text}): nothing is sent to them until they "
           "write again")


def opted_out(conversation) -> dict | None:
    """{"at": datetime, "text"} while the customer's latest word was an opt-out; None otherwise."""
    state = (conversation.meta or {}).get(OPT_OUT)
    if not isinstance(state, dict):
        return None
    return {"at": parse_datetime(state.get("at") or "") or timezone.now(), "text": state.get("text") or "STOP"}


def refusal(conversation) -> str | None:
    """Why nothing goes to an opted-out customer, in the words the inbox shows; None while they have
    not opted out."""
    stopped = opted_out(conversation)
    return None if stopped is None else REFUSED.format(text=f'"{stopped["text"]}"')


def follow_customer(message, opt_out: bool):
    """The customer's new ``message`` sets the opt-out (it is an opt-out keyword) or ends it (anything
    else: START, or any message — they wrote again). Called in the transaction that stored it, so the
    state follows the order the messages were stored in. An opt-out also leaves their earlier messages
    unanswered: a reply to them could no longer be sent."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(id=message.conversation_id)
        meta = dict(conversation.meta or {})
        if opt_out:
            meta[OPT_OUT] = {"at": message.created.isoformat(), "text": " ".join(message.text.split())[:40]}
            services.skip_pending(conversation.id, reason="opt-out")
        elif meta.pop(OPT_OUT, None) is None:
            return
        Conversation.objects.filter(id=conversation.id).update(meta=meta)
