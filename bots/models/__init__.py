"""Models, split by area: tenants (organisations, members, API tokens), bots (builder config,
knowledge), conversations (conversations and messages), attachments (customers' files), replies
(saved replies)."""
from .attachments import Attachment
from .bots import Bot, KnowledgeItem
from .conversations import Conversation, Message
from .replies import SavedReply
from .tenants import ApiToken, Invitation, Membership, Organization

__all__ = [
    "Organization",
    "Membership",
    "Invitation",
    "Bot",
    "KnowledgeItem",
    "Conversation",
    "Message",
    "Attachment",
    "SavedReply",
    "ApiToken",
]
