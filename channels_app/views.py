"""The per-bot "Channels" page: connect the website widget, WhatsApp, email and your own backend (API).

``/channels/bots/<id>/`` — managers (owners, admins) of the bot's organisation only;
another organisation's bot is a 404. One form per channel (``forms.FORMS``), posted
with ``channel=<kind>``; each shows copy-paste setup steps. Secrets are stored
encrypted and never rendered back: the page says "set" or "not set", or, after a key change with
no key listed that decrypts them, that they cannot be read (typed again, they replace them; a check
of the channel is not tried until then). The email channel's address
may not be another organisation's, and goes on mail through the platform's own server only once
confirmed by a link mailed to it (``email/sender.py``).
"""
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.text import capfirst
from django.views.decorators.http import require_POST

from bots import audit
from bots.api import webhook
from bots.models import Bot
from bots.models.bots import lock_bots
from bots.tenancy import get_scoped_or_404, require_manager

from .crypto import UNREADABLE
from .email import check as email_check
from .email import sender as email_sender
from .forms import FORMS
from .models import ChannelConfig
from .registry import adapter_for
from .whatsapp import check as whatsapp_check


def _public_url(name, key):
    try:
        return settings.PUBLIC_URL + reverse(f"channels:{name}", args=[key])
    except NoReverseMatch:
        return ""


@login_required
def bot_channels(request, bot_id):
    require_manager(request)
    bot = get_scoped_or_404(request, Bot, id=bot_id)
    configs = {c.kind: c for c in ChannelConfig.objects.filter(organization=request.organization, bot=bot)}
    forms = {kind: form_class(config=configs.get(kind), prefix=kind) for kind, form_class in FORMS.items()}
    status = 200
    # what the last save or check said, shown in that channel's section (the page opens scrolled to it)
    notes = {kind: request.session.pop(_notes_key(bot, kind), None) for kind in FORMS} if request.method == "GET" else {}
    if request.method == "POST":
        kind = request.POST.get("channel", "")
        if kind not in FORMS:
            messages.error(request, "Unknown channel.")
            return render(request, "channels/bot_channels.html", _context(bot, configs, forms), status=400)
        form = forms[kind] = FORMS[kind](request.POST, config=configs.get(kind), prefix=kind)
        if form.is_valid():
            with transaction.atomic():
                # the bot's row locked and its config read again: the same form sent twice at once (a
                # double click) saves one after the other, the second updating the config the first
                # made instead of making a second one (one per bot and channel); a save meanwhile
                # (IMAP's own progress, another manager's) is kept where this form does not change it
                lock_bots([bot.id])
                config = (ChannelConfig.objects.select_for_update().filter(bot=bot, kind=kind).first()
                          or ChannelConfig(organization=request.organization, bot=bot, kind=kind))
                # an address confirmed for another organisation's email channel is refused, under the address's
                # lock (a confirmation committing meanwhile is seen)
                claimed = kind == "email" and _claimed_elsewhere(config, form.cleaned_data, request.organization)
                if not claimed:
                    asked_for = _unconfirmed_address(config)
                    secrets_before = dict(config.stored_secrets())
                    form.apply(config).save()
                    audit.record(request.organization, request.user, "channel.saved",
                                 _saved_words(config, bot, secrets_before, form))
            if not claimed:
                notes = [(True, f"{config.get_kind_display()} settings saved.")]
                if _unconfirmed_address(config) not in (None, asked_for):  # a new address, or newly through the platform
                    notes.append(email_sender.send_confirmation(config))
                request.session[_notes_key(bot, kind)] = notes
                return redirect(reverse("channels:bot", args=[bot.id]) + f"#{kind}")
            form.add_error("address", email_sender.CLAIMED)
        status = 400
    return render(request, "channels/bot_channels.html",
                  {**_context(bot, configs, forms), "notes": _unreadable_said(notes, configs)}, status=status)


def _saved_words(config, bot, secrets_before, form):
    """"Saved the WhatsApp (Twilio) settings of Ava (new Auth token)": which secrets changed, never their values."""
    secrets = config.stored_secrets()
    changed = [("new " if name in secrets else "removed the ") + str(form.fields[name].label)
               for name in form.SECRETS if secrets.get(name) != secrets_before.get(name)]
    state = "" if config.enabled else ", turned off"
    return f"Saved the {config.get_kind_display()} settings of {bot.name}{state}" + (f" ({', '.join(changed)})" if changed else "")


def _unreadable_said(notes, configs):
    """Each channel whose stored credentials no listed key decrypts (the key changed: crypto.py) says
    so in its section, above the form that takes them again."""
    return {**notes, **{kind: [(False, capfirst(UNREADABLE) + "."), *(notes.get(kind) or [])]
                        for kind, config in configs.items() if FORMS[kind].SECRETS and config.secrets_unreadable}}


def _claimed_elsewhere(config, saved, organization):
    """Is the address this save gives the channel one someone confirmed for another organisation's
    channel (``email.sender.claimed_elsewhere``, which takes the address's lock)? Only an address new
    to it: one the channel had before is left to it."""
    address = saved["address"]
    new = email_sender.comparable(address) != email_sender.comparable(config.settings.get("address") or "")
    return new and email_sender.claimed_elsewhere(address, organization)


def _unconfirmed_address(config):
    """The address an email channel would send as through the platform, if that needs confirming."""
    if config.kind != "email" or config.pk is None or not email_sender.needs_confirmation(config):
        return None
    return email_sender.comparable(config.settings.get("address") or "")


def _notes_key(bot, kind):
    return f"channel-notes-{kind}-{bot.id}"


def _context(bot, configs, forms):
    whatsapp, email = configs.get("whatsapp"), configs.get("email")
    return {
        "bot": bot,
        "forms": forms,
        "configs": configs,
        "public_url": settings.PUBLIC_URL,
        "snippet": f'<script src="{settings.PUBLIC_URL}/static/chatnexus/widget.js" data-bot="{bot.public_key}" async></script>',
        "try_url": reverse("channels:widget-try", args=[bot.id]),
        "whatsapp_webhook": _public_url("whatsapp-inbound", whatsapp.key) if whatsapp else "",
        "whatsapp_status": _public_url("whatsapp-status", whatsapp.key) if whatsapp else "",
        "email_webhook": _public_url("email-inbound", email.key) if email else "",
        "email_from": _email_from(email) if email else None,
    }


def _email_from(config):
    """Whose address the email channel's mail is from, for the page (``email.sender``)."""
    state = ("own server" if email_sender.own_server(config) else "confirmed" if email_sender.confirmed(config)
             else "unconfirmed")
    return {"state": state, "address": config.settings.get("address", ""), "platform": email_sender.platform_address(),
            "days": email_sender.CONFIRM_DAYS}


def _test_email(config, request):
    """To the address typed beside the button (the asker's own, prefilled); never the bot's own,
    where IMAP would fetch it as a customer's mail."""
    to = request.POST.get("to", "").strip()
    try:
        email_check.validate_recipient(to)
    except ValidationError:
        return [(False, "Write the address the test email should go to.")]
    if email_sender.comparable(to) == email_sender.comparable(config.settings.get("address") or ""):
        return [(False, f"Not to {to}, the bot's own address: the mail would come back in as a customer's. "
                        "Send it to your own address.")]
    return email_check.check(config, to)


CHECKS = {  # kind -> the check of its saved settings, given the config and the request
    "email": _test_email,
    "whatsapp": lambda config, request: whatsapp_check.check(config),
    "api": lambda config, request: webhook.check(config),
}


@login_required
@require_POST
def channel_check(request, bot_id, kind):
    """"Send a test email" / "Check the Twilio settings" / "Send a test event" (API webhook): the saved settings tried as the channel
    uses them (email/check.py, whatsapp/check.py). The results show in the channel's section of
    the Channels page (kept in the session for the one page view after the redirect, like "saved"). A test
    email goes to the address typed beside its button (prefilled with the asker's)."""
    require_manager(request)
    bot = get_scoped_or_404(request, Bot, id=bot_id)
    config = ChannelConfig.objects.filter(organization=request.organization, bot=bot, kind=kind).first()
    if config is None:
        results = [(False, f"Save the {adapter_for(kind).label} settings first.")]
    elif config.secrets_unreadable:
        results = [(False, f"Not tried: {UNREADABLE}.")]
    else:
        results = CHECKS[kind](config, request)
    request.session[_notes_key(bot, kind)] = results
    return redirect(reverse("channels:bot", args=[bot.id]) + f"#{kind}")


@login_required
@require_POST
def email_confirmation(request, bot_id):
    """"Send the confirmation email again": the link that lets the bot's replies through the platform's
    mail server go from its address (``email.sender``), mailed to that address."""
    require_manager(request)
    bot = get_scoped_or_404(request, Bot, id=bot_id)
    config = ChannelConfig.objects.filter(organization=request.organization, bot=bot, kind="email").first()
    if config is None:
        results = [(False, "Save the email settings first.")]
    elif not email_sender.needs_confirmation(config):
        results = [(True, f"Nothing to confirm: replies go from {config.settings.get('address')} already.")]
    else:
        results = [email_sender.send_confirmation(config)]
    request.session[_notes_key(bot, "email")] = results
    return redirect(reverse("channels:bot", args=[bot.id]) + "#email")


@login_required
def widget_try(request, bot_id):
    """A blank page on the platform's own origin with the widget embedded, to try it. The script comes
    from this page's own address (a path, no host): the one the manager is at, which the widget
    allows (``widget.options.own_origin``), whether or not it is PUBLIC_URL's; a path also keeps an
    https page's script https behind a TLS proxy, where Django sees http."""
    require_manager(request)
    bot = get_scoped_or_404(request, Bot, id=bot_id)
    widget_on = ChannelConfig.objects.filter(organization=request.organization, bot=bot, kind=ChannelConfig.Kind.WIDGET,
                                             enabled=True).exists()
    # without a saved, enabled widget the script would find no config and show nothing: say why instead
    return render(request, "channels/widget_try.html", {"bot": bot, "widget_on": widget_on,
                                                        "channels_url": reverse("channels:bot", args=[bot.id]) + "#widget"})
