"""Models, split by area: tenants (organisations, members), bots (builder config,
knowledge), conversations (conversations and messages), attachments (customers' files)."""
from .attachments import Attachment
from .bots import Bot, KnowledgeItem
from .conversations import Conversation, Message
from .tenants import Invitation, Membership, Organization

__all__ = [
    "Organization",
    "Membership",
    "Invitation",
    "Bot",
    "KnowledgeItem",
    "Conversation",
    "Message",
    "Attachment",
]
