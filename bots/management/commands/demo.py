"""``manage.py demo``: a demo organisation, user and published bot (idempotent).

Creates (or brings back to the demo state) the user ``demo`` / ``demo-password``,
the organisation "Demo Bikes", and a published bot with a persona, FAQs and a
document, its website widget on. Prints where to log in.
"""
import os

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from bots.models import Bot, KnowledgeItem, Membership, Organization

USERNAME, PASSWORD = "demo", "demo-password"
BOT_NAME = "Ava"

FAQS = [
    ("What are your opening hours?", "We are open Monday to Friday 9am-6pm and Saturday 10am-4pm. Closed on Sundays."),
    ("Do you offer free delivery?", "Yes: delivery is free on orders over 50 euros, otherwise it costs 5 euros."),
    ("What is your return policy?", "You can return any unused item within 30 days for a full refund. Bring the receipt."),
    ("Do you repair bikes?", "Yes, our workshop repairs all brands. A standard service costs 49 euros and takes two days."),
]
DOCUMENT = """Demo Bikes is a small bicycle shop in Lisbon, founded in 2012.

We sell city bikes, e-bikes and kids' bikes, plus helmets, locks and lights.
Our best seller is the Tejo city e-bike (1,890 euros, 80 km range).

Test rides are free: bring an ID and we lend you any bike for 30 minutes.
"""


class Command(BaseCommand):
    help = "Create the demo organisation, user and bot (safe to run again)."

    @transaction.atomic
    def handle(self, *args, **options):
        org, _ = Organization.objects.get_or_create(slug="demo-bikes", defaults={"name": "Demo Bikes"})
        User = get_user_model()
        user, created = User.objects.get_or_create(username=USERNAME, defaults={"email": "demo@example.com"})
        # the demo password only for a new demo user: scripts/run.sh runs this at every start, and
        # an operator who changed it must not get demo / demo-password back as the owner each time
        changed = not created and not user.check_password(PASSWORD)
        if created or not user.has_usable_password():
            user.set_password(PASSWORD)
            user.save()
            changed = False
        Membership.objects.update_or_create(user=user, organization=org, defaults={"role": Membership.Role.OWNER})

        bot, bot_created = Bot.objects.get_or_create(
            organization=org,
            name=BOT_NAME,
            defaults={
                "role": "friendly support assistant",
                "company": "Demo Bikes",
                "tone": Bot.Tone.FRIENDLY,
                "reply_length": Bot.Length.SHORT,
                "greeting": "Hi! I'm Ava from Demo Bikes. Ask me about bikes, repairs or opening hours.",
                "instructions": "Answer questions about Demo Bikes using the facts. Do not make up prices.",
                # buttons in the widget before the first message (questions the facts answer)
                "suggestions": "When are you open?\nHow much is the Tejo e-bike?\nIs delivery free?\nWhere is your shop?",
                "topics_to_avoid": "politics\ncompetitors' prices",
                "max_reply_tokens": 96,
            },
        )
        if bot_created or not bot.knowledge.exists():
            for question, answer in FAQS:
                KnowledgeItem.objects.create(bot=bot, kind=KnowledgeItem.Kind.FAQ, title=question, body=answer)
            KnowledgeItem.objects.create(bot=bot, kind=KnowledgeItem.Kind.DOC, title="About Demo Bikes", body=DOCUMENT)
        if bot.published_config is None:  # once: a draft the user left unpublished stays a draft
            bot.publish()
        # the website widget on, with the default settings: "Try it on a blank page" works at once
        # (the platform's own origin needs no allow-list entry)
        from channels_app.models import ChannelConfig
        from channels_app.widget.options import DEFAULTS as WIDGET_DEFAULTS

        ChannelConfig.objects.get_or_create(organization=org, bot=bot, kind=ChannelConfig.Kind.WIDGET,
                                            defaults={"settings": dict(WIDGET_DEFAULTS)})

        self.stdout.write(self.style.SUCCESS("Demo ready."))
        if os.environ.get("PUBLIC_URL", "").strip():
            self.stdout.write(f"  Open   {settings.PUBLIC_URL}/accounts/login/")
        else:  # serve takes the address it listens at (its --port)
            self.stdout.write("  Open   /accounts/login/ at the address `manage.py serve` prints")
        self.stdout.write(f"  Log in {USERNAME} / " + ("(the password you set)" if changed else PASSWORD))
        self.stdout.write(f"  Bot    {bot.name} (id {bot.id}, public key {bot.public_key})")
