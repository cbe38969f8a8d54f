"""Models, split by area: tenants (organisations, members), bots (builder config,
knowledge), conversations (conversations and messages), attachments (customers' files), replies
(saved replies)."""
from .attachments import Attachment
from .bots import Bot, KnowledgeItem
from .conversations import Conversation, Message
from .replies import SavedReply
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
    "SavedReply",
]
