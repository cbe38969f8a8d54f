"""Forms of the per-bot Channels page: one per channel.

Each form edits a ``ChannelConfig``: ``SETTINGS`` fields go to ``config.settings``
(plain JSON), ``SECRETS`` fields to ``config.secrets`` (encrypted). Secret inputs are
never filled back in: left blank they keep the stored value, "clear" removes it (stored ones
no listed key decrypts, the key changed, count as none: a save keeps only those typed). A secret
sent to a server the settings name (``SECRET_SERVERS``: the SMTP password to the SMTP host,
port and user) is kept only while they stay as they were: change one, and the password must
be typed again (or removed; emptying the host drops it), or a manager could point the channel at
their own server and receive the stored password at the next send or "Send a test email".
"""
import re

from django import forms
from django.conf import settings
from django.utils import timezone
from django.utils.encoding import punycode

from bots import egress

from .widget.options import DEFAULTS as WIDGET_DEFAULTS
from .widget.options import LANGUAGES as WIDGET_LANGUAGES
from .widget.options import normalize_origin


def _as_text(value) -> str:
    """A setting as compared across saves: 587 and "587" alike, absent (None) and empty alike."""
    return "" if value is None else str(value)


def _lookups(seconds: int) -> egress.Deadline:
    """The deadline of one save's host name look-ups, all together (``egress.Deadline.within``): the system
    resolver asks its name servers for as long as they take and nothing interrupts it, so the save (and
    the web worker) waited as long. Past it, the look-up raises this form error, for the host's field;
    the page shows the form again as typed."""
    return egress.Deadline(seconds, lambda: forms.ValidationError(
        f"Looking this host name up took longer than {seconds} s (its name servers did not answer): save again "
        "in a moment, or check the name.", code="lookup_late"))


class ChannelForm(forms.Form):
    SETTINGS: tuple = ()
    SECRETS: tuple = ()
    REQUIRED_SECRETS: tuple = ()  # must be stored (now or before) for the channel to work
    SECRET_SERVERS: dict = {}  # secret -> the settings saying where it is sent: it is kept only while they stay
    DEFAULTS: dict = {}

    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    def __init__(self, *args, config=None, **kwargs):
        self.config = config
        initial = {"enabled": True, **self._settings_of(config)}
        if config is not None:
            initial["enabled"] = config.enabled
        super().__init__(*args, initial=initial, **kwargs)
        for name in self.SECRETS:
            self.fields[name].widget = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
            self.fields[name].required = False
            label = self.fields[name].label
            label = label[0].lower() + label[1:] if label[1:2].islower() else label  # "auth token", but "SMTP password"
            self.fields[f"clear_{name}"] = forms.BooleanField(required=False, label=f"Remove the stored {label}")

    def clean(self):
        data = super().clean()
        stored = self.config.stored_secrets() if self.config is not None else {}
        for name in self.REQUIRED_SECRETS:
            if name in self.errors:  # typed, but not valid: that error says it
                continue
            if not data.get(name) and (not stored.get(name) or data.get(f"clear_{name}")):
                self.add_error(name, "Required.")
        for name in self._secrets_moved():
            host = self.SECRET_SERVERS[name][0]
            if (stored.get(name) and data.get(host) and not data.get(name) and not data.get(f"clear_{name}")
                    and name not in self.errors):
                label, clear = self.fields[name].label, self.fields[f"clear_{name}"].label
                self.add_error(name, f"Type the {label} again: the server settings changed, and the stored one is "
                                     f"sent only to the server it was typed for (or tick “{clear}”).")
        return data

    def _settings_of(self, config):
        """This form's settings as ``config`` holds them, the defaults where it has none."""
        stored = config.settings if config is not None else {}
        return {**self.DEFAULTS, **{k: v for k, v in stored.items() if k in self.SETTINGS}}

    def _secrets_moved(self, config=None):
        """The secrets whose server (``SECRET_SERVERS``) this save changes from ``config`` (default: the one
        the page showed); saved without a new value, the stored one is dropped (with no server left,
        silently). None on a channel's first save. ``apply`` asks about the config as stored when it
        saves: a form validated while someone else pointed the channel at another server (or back) must
        not carry the secret typed for one to the other."""
        config = self.config if config is None else config
        if config is None or config.pk is None:
            return []
        stored = self._settings_of(config)
        return [name for name, where in self.SECRET_SERVERS.items()
                if any(_as_text(self.cleaned_data.get(k)) != _as_text(stored.get(k)) for k in where)]

    def secret_states(self):
        """``[(label, "set" | "not set" | "cannot be read")]`` — what the page shows instead of a secret."""
        if self.config is not None and self.config.secrets_unreadable:
            return [(self.fields[name].label, "cannot be read") for name in self.SECRETS]
        stored = self.config.secrets if self.config is not None else {}
        return [(self.fields[name].label, "set" if stored.get(name) else "not set") for name in self.SECRETS]

    def apply(self, config):
        """Copy the cleaned data onto ``config`` (not saved)."""
        moved = self._secrets_moved(config)  # against the settings as stored, before they change
        config.enabled = self.cleaned_data["enabled"]
        config.settings = {**config.settings, **{k: self.cleaned_data[k] for k in self.SETTINGS}}
        secrets = dict(config.stored_secrets())  # unreadable ones (the key changed) replaced by those typed
        for name in self.SECRETS:
            if self.cleaned_data.get(f"clear_{name}") or (name in moved and not self.cleaned_data.get(name)):
                secrets.pop(name, None)
            elif self.cleaned_data.get(name):
                secrets[name] = self.cleaned_data[name]
        config.secrets = secrets
        return config


class WidgetForm(ChannelForm):
    SETTINGS = (
        "allowed_origins", "position", "prechat_email", "connections_per_minute", "messages_per_minute",
        "ip_connections_per_minute", "ip_messages_per_minute", "bot_connections_per_minute", "bot_messages_per_minute", "max_message_chars", "language", "file_uploads",
        "max_upload_mb",
    )  # fmt: skip
    DEFAULTS = WIDGET_DEFAULTS

    allowed_origins = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "https://shop.example.com"}),
        required=False,
        help_text="Website origins, one per line or separated by commas (scheme + host + optional port, no path; "
                  "no wildcards: list each site). Only these sites may embed the widget.",
    )
    position = forms.ChoiceField(choices=[("right", "Bottom right"), ("left", "Bottom left")])
    language = forms.ChoiceField(choices=WIDGET_LANGUAGES, required=False, label="Widget language",
                                 help_text="The widget's buttons and notices; the bot answers in the language of its instructions.")
    prechat_email = forms.BooleanField(required=False, label="Ask for the visitor's email (optional) before the first message")
    connections_per_minute = forms.IntegerField(min_value=1, max_value=10_000, label="Connections per visitor per minute")
    messages_per_minute = forms.IntegerField(min_value=1, max_value=10_000, label="Messages per visitor per minute")
    ip_connections_per_minute = forms.IntegerField(min_value=1, max_value=100_000, required=False,
                                                   label="Connections per IP address per minute",
                                                   help_text="All visitors behind one address together.")
    ip_messages_per_minute = forms.IntegerField(min_value=1, max_value=100_000, required=False,
                                                label="Messages per IP address per minute",
                                                help_text="All visitors behind one address together (an office, a mobile network).")
    bot_connections_per_minute = forms.IntegerField(min_value=1, max_value=1_000_000, label="Connections per minute, all visitors")
    bot_messages_per_minute = forms.IntegerField(min_value=1, max_value=1_000_000, label="Messages per minute, all visitors")
    max_message_chars = forms.IntegerField(min_value=1, max_value=20_000, label="Longest message (characters)")
    file_uploads = forms.BooleanField(required=False, label="Visitors may attach files (images, PDF, text)",
                                      help_text="Kept with the conversation for your team; the bot reads only the text.")
    max_upload_mb = forms.IntegerField(min_value=1, max_value=25, label="Largest file (MB)")

    def clean_ip_connections_per_minute(self):  # a form from before the setting existed leaves it out
        return self.cleaned_data["ip_connections_per_minute"] or WIDGET_DEFAULTS["ip_connections_per_minute"]

    def clean_ip_messages_per_minute(self):  # a form from before the setting existed leaves it out
        return self.cleaned_data["ip_messages_per_minute"] or WIDGET_DEFAULTS["ip_messages_per_minute"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        origins = self.initial.get("allowed_origins")
        if isinstance(origins, list):
            self.initial["allowed_origins"] = "\n".join(origins)

    def clean_language(self):
        return self.cleaned_data["language"] or "auto"

    def clean_allowed_origins(self):
        """One origin per line, or separated by commas (``a, b``): each must be one a browser sends."""
        origins, bad = [], []
        for entry in re.findall(r"[^\s,]+", self.cleaned_data["allowed_origins"]):
            origin = normalize_origin(entry)
            (origins if origin else bad).append(origin or entry)
        if bad:
            wildcards = " (wildcards are not supported: list each site)" if any("*" in entry for entry in bad) else ""
            raise forms.ValidationError(f"Not a website origin (like https://shop.example.com): {', '.join(bad)}{wildcards}")
        return list(dict.fromkeys(origins))


class WhatsAppForm(ChannelForm):
    SETTINGS = ("account_sid", "phone_number", "messaging_service_sid", "reengage_content_sid")
    SECRETS = ("auth_token", "webhook_signing_key")
    REQUIRED_SECRETS = ("auth_token",)

    account_sid = forms.RegexField(regex=r"^AC[0-9a-fA-F]{32}$", label="Twilio account SID", help_text="Starts with AC.",
                                   error_messages={"invalid": "A Twilio account SID is AC followed by 32 hex digits."})
    auth_token = forms.RegexField(regex=r"^[0-9a-fA-F]{32}$", label="Auth token",
                                  error_messages={"invalid": "A Twilio auth token is 32 hex digits (Twilio Console, Account Info)."})
    webhook_signing_key = forms.CharField(
        max_length=200, label="Webhook signing key",
        help_text="Optional: only if a Twilio Webhook Rule signs these webhooks with a SharedKey (they then carry "
                  "X-Twilio-Webhooks-Signature-Settings): that key's secret. Other webhooks are checked with the auth token.")
    phone_number = forms.RegexField(regex=r"^whatsapp:\+[1-9][0-9]{6,14}$", label="WhatsApp number",
                                    help_text="Like whatsapp:+14155238886",
                                    error_messages={"invalid": "Write the number as whatsapp:+<country code><number>."})
    messaging_service_sid = forms.RegexField(regex=r"^MG[0-9a-fA-F]{32}$", required=False, label="Messaging Service SID (optional)",
                                             error_messages={"invalid": "A Messaging Service SID is MG followed by 32 hex digits."})
    reengage_content_sid = forms.RegexField(
        regex=r"^HX[0-9a-fA-F]{32}$", required=False, label="Re-engagement template (Content SID, optional)",
        help_text="An approved WhatsApp template (Twilio Content Template Builder, HX…). When a customer's "
                  "24-hour window has closed, agents can send it from the inbox; {{1}} is the customer's name.",
        error_messages={"invalid": "A Content SID is HX followed by 32 hex digits."})


# What an email channel without an SMTP host does (adapter.smtp_connection, email/sender.py), as the page says it.
NO_SMTP_HOST = ("Leave empty to send replies through this platform's own mail server. They go from the bot's address "
                "once someone at it has followed the link of the confirmation email; through an SMTP server of your "
                "own they need no confirmation.")
NO_SMTP_HOST_NOR_PLATFORM = ("Leave empty and replies are only written to this server's log, not sent: the platform has "
                             "no mail server set up (EMAIL_HOST). The inbox marks such replies \"written to the server "
                             "log only\".")


class EmailForm(ChannelForm):
    SETTINGS = (
        "address", "from_name", "smtp_host", "smtp_port", "smtp_user", "smtp_use_tls", "imap_host", "imap_port",
        "imap_user", "imap_use_ssl", "imap_folder", "max_replies_per_sender_per_day",
    )  # fmt: skip
    SECRETS = ("smtp_password", "imap_password", "inbound_secret")
    SECRET_SERVERS = {"smtp_password": ("smtp_host", "smtp_port", "smtp_user", "smtp_use_tls"),
                      "imap_password": ("imap_host", "imap_port", "imap_user", "imap_use_ssl")}
    DEFAULTS = {"smtp_port": 587, "smtp_use_tls": True, "imap_port": 993, "imap_use_ssl": True, "imap_folder": "INBOX"}
    ASCII_ONLY = ("smtp_user", "smtp_password", "imap_user", "imap_password")  # SMTP and IMAP log in in ASCII

    address = forms.EmailField(label="Bot's email address", help_text=(
        "Saved without an SMTP server of your own, a confirmation email goes to it: until someone there follows "
        "its link, replies go from this platform's address, with Reply-To this one (customers' answers still come "
        "back). Changing the address asks again."))
    from_name = forms.CharField(max_length=100, required=False, label="From name")
    smtp_host = forms.CharField(max_length=255, required=False, label="SMTP host (optional)")
    smtp_port = forms.IntegerField(min_value=1, max_value=65535, required=False, label="SMTP port")
    smtp_user = forms.CharField(max_length=255, required=False, label="SMTP user")
    smtp_password = forms.CharField(max_length=500, label="SMTP password",
                                    help_text="Type it again when you change the SMTP host, port, user or STARTTLS: "
                                              "the stored one goes only to the server it was typed for.")
    smtp_use_tls = forms.BooleanField(required=False, label="SMTP uses STARTTLS")
    imap_host = forms.CharField(max_length=255, required=False, label="IMAP host (leave empty to use the inbound webhook only)")
    imap_port = forms.IntegerField(min_value=1, max_value=65535, required=False, label="IMAP port")
    imap_user = forms.CharField(max_length=255, required=False, label="IMAP user")
    imap_password = forms.CharField(max_length=500, label="IMAP password",
                                    help_text="Type it again when you change the IMAP host, port, user or SSL: "
                                              "the stored one goes only to the server it was typed for.")
    imap_use_ssl = forms.BooleanField(required=False, label="IMAP over SSL")
    imap_folder = forms.CharField(max_length=100, required=False, label="IMAP folder")
    inbound_secret = forms.CharField(max_length=200, label="Inbound webhook secret")
    max_replies_per_sender_per_day = forms.IntegerField(min_value=0, max_value=1000, label="Auto-replies per sender per day")

    MAILBOX = ("imap_host", "imap_user", "imap_folder")

    def __init__(self, *args, **kwargs):
        from bots.membership import mail_leaves_the_server

        super().__init__(*args, **kwargs)
        self.initial.setdefault("max_replies_per_sender_per_day", settings.CHATNEXUS_EMAIL_MAX_REPLIES_PER_DAY)
        self.fields["smtp_host"].help_text = NO_SMTP_HOST if mail_leaves_the_server() else NO_SMTP_HOST_NOR_PLATFORM

    def clean_address(self):
        """Stored with its domain in IDNA (hilfe@xn--mller-shop-9db.de): what mail headers can hold."""
        from .email.adapter import ascii_address

        try:
            return ascii_address(self.cleaned_data["address"])
        except UnicodeError:
            raise forms.ValidationError("This domain cannot be written in a mail: each part between dots must be "
                                        "at most 63 characters once in IDNA (xn--…).") from None

    def clean(self):
        from .email.adapter import refused_mail_host

        data = super().clean()
        for name in self.ASCII_ONLY:
            if data.get(name) and not data[name].isascii():
                self.add_error(name, f"{self.fields[name].label} may hold only ASCII characters (no accents, no curly "
                                     "quotes): mail servers take the login in ASCII.")
        deadline = _lookups(settings.CHATNEXUS_SMTP_TIMEOUT_S)
        for kind, default_port in (("smtp", 587), ("imap", 993 if data.get("imap_use_ssl") else 143)):
            host = (data.get(f"{kind}_host") or "").strip()
            try:
                punycode(host)
            except UnicodeError:
                self.add_error(f"{kind}_host", "Not a host name: each part between dots must be 1 to 63 characters.")
                continue
            try:
                refused = host and refused_mail_host(host, data.get(f"{kind}_port") or default_port, deadline)
            except forms.ValidationError as late:
                self.add_error(f"{kind}_host", late)
                break  # the deadline is spent: the other host is looked up at the next save
            if refused:
                self.add_error(f"{kind}_host", f"Not allowed: {refused}.")
        return data

    def apply(self, config):
        """A newly connected mailbox (host, user or folder changed) starts now: mail already in it
        is not answered (``imap.connected_since``). A new address is not confirmed (``email.sender``)."""
        from .email.sender import CONFIRMED, comparable

        before = tuple(config.settings.get(name) for name in self.MAILBOX)
        address_before = comparable(config.settings.get("address") or "")
        config = super().apply(config)
        if config.settings.get("imap_host") and tuple(config.settings.get(name) for name in self.MAILBOX) != before:
            config.settings = {**config.settings, "imap_since": timezone.now().isoformat()}
        if comparable(config.settings["address"]) != address_before:
            config.settings = {k: v for k, v in config.settings.items() if k != CONFIRMED}
        return config


class ApiForm(ChannelForm):
    """The API channel's reply webhook (bots/api/webhook.py); the API itself needs no settings."""

    SETTINGS = ("webhook_url",)
    SECRETS = ("webhook_secret",)
    REQUIRED_SECRETS = ("webhook_secret",)

    webhook_url = forms.URLField(max_length=2000, label="Reply webhook URL", assume_scheme="https",
                                 help_text="Every message sent on an API conversation is POSTed here as JSON.")
    webhook_secret = forms.CharField(min_length=16, max_length=200, label="Signing secret",
                                     help_text="At least 16 characters, e.g. from openssl rand -hex 32. "
                                               "Each POST is signed with it (X-ChatNexus-Signature).")

    def clean_webhook_url(self):
        from bots.api.webhook import refused_address

        url = self.cleaned_data["webhook_url"]
        try:
            refused = refused_address(url, _lookups(settings.CHATNEXUS_WEBHOOK_TIMEOUT_S))
        except OSError:
            raise forms.ValidationError("This host name does not resolve.") from None
        if refused:
            raise forms.ValidationError(f"Not allowed: {refused}.")
        return url


FORMS = {"widget": WidgetForm, "whatsapp": WhatsAppForm, "email": EmailForm, "api": ApiForm}
