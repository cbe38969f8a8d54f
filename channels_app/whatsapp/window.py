"""WhatsApp's customer-service window: free text reaches a customer only within 24 hours of
their last message; after that only an approved template does (Twilio error 63016).

The inbox asks ``notice(conversation)`` what to tell the agent; an agent re-opens a closed
window by sending the channel's re-engagement template (``reengage``), whose ``{{1}}`` is
the customer's name. When the customer answers, the window is open again.
"""
from datetime import timedelta

from django.utils import timezone

from bots import services
from bots.models import Message

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
