"""Models, split by area: tenants (organisations, members, API tokens), bots (builder config,
knowledge, published versions), conversations (conversations and messages), attachments (customers' files), replies
(saved replies)."""
from .attachments import Attachment
from .bots import Bot, BotVersion, KnowledgeItem
from .conversations import Conversation, Message, ReplyBeat, Tag
from .replies import SavedReply
from .tenants import ApiToken, AuditEvent, Invitation, Membership, Organization, TwoFactor

__all__ = [
    "Organization",
    "Membership",
    "Invitation",
    "Bot",
    "BotVersion",
    "KnowledgeItem",
    "Conversation",
    "Message",
    "ReplyBeat",
    "Tag",
    "Attachment",
    "SavedReply",
    "ApiToken",
    "TwoFactor",
    "AuditEvent",
]
