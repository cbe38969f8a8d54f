"""A bot's connection to a channel: public settings plus encrypted secrets."""
import secrets

from django.db import models

from bots.models import Bot, Organization

from .crypto import EncryptedJSONField, UnreadableSecrets


def _channel_key():
    return secrets.token_urlsafe(16)


class ChannelConfig(models.Model):
    class Kind(models.TextChoices):
        WIDGET = "widget", "Website widget"
        WHATSAPP = "whatsapp", "WhatsApp (Twilio)"
        EMAIL = "email", "Email"
        API = "api", "API"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="channel_configs")
    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="channel_configs")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    enabled = models.BooleanField(default=True)
    # Unguessable id used in this channel's webhook URLs.
    key = models.CharField(max_length=40, unique=True, default=_channel_key)
    # Non-secret settings (allowed origins, phone number, addresses, limits).
    settings = models.JSONField(default=dict, blank=True)
    # Credentials (Twilio auth token, SMTP/IMAP passwords, inbound webhook secret): encrypted at rest.
    secrets = EncryptedJSONField(blank=True, default=dict)
    created = models.DateTimeField(auto_now_add=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "kind"], name="one_config_per_bot_channel")]

    def __str__(self):
        return f"{self.bot} · {self.get_kind_display()}"

    @property
    def secrets_unreadable(self) -> bool:
        """No listed key decrypts the stored credentials (the key changed, crypto.py): using them
        raises ``crypto.Unreadable``; the Channels page asks for them again."""
        return isinstance(self.secrets, UnreadableSecrets)

    def stored_secrets(self) -> dict:
        """The credentials as stored; none when they cannot be read (``secrets_unreadable``): a save
        of the channel's form then stores only those typed."""
        return {} if self.secrets_unreadable else self.secrets
