"""``manage.py reencrypt_secrets``: rewrite every stored secret (channel credentials, second
factors) under the current encryption key, after a rotation (channels_app/crypto.py).

Values written under an earlier key are read through ``CHATNEXUS_ENCRYPTION_OLD_KEYS`` and
``SECRET_KEY_FALLBACKS``; once this has run, those can be removed. A value no listed key decrypts
is named and left as it is; ``--forget-unreadable`` drops it instead: a channel's credentials are
emptied (to be entered again on its Channels page), a second factor is removed (its user signs in
with the password alone and can turn it on again).
"""
from django.core.management.base import BaseCommand

from bots.models import TwoFactor
from channels_app.models import ChannelConfig


class Command(BaseCommand):
    help = "Re-encrypt stored secrets under the current CHATNEXUS_ENCRYPTION_KEY / SECRET_KEY."

    def add_arguments(self, parser):
        parser.add_argument("--forget-unreadable", action="store_true",
                            help="empty channel credentials and remove second factors that no key decrypts")

    def handle(self, *args, forget_unreadable=False, **options):
        unreadable = 0
        for model, what in ((ChannelConfig, "channel"), (TwoFactor, "second factor")):
            done = 0
            for row_id in model.objects.values_list("id", flat=True):
                try:
                    row = model.objects.get(id=row_id)
                except ValueError:  # crypto.decrypt: no listed key opens it
                    unreadable += 1
                    if not forget_unreadable:
                        self.stderr.write(f"{what} {row_id}: does not decrypt with any listed key; left as it is")
                    elif model is TwoFactor:
                        model.objects.filter(id=row_id).delete()
                        self.stderr.write(f"{what} {row_id}: unreadable; removed (its user signs in with the password)")
                    else:
                        model.objects.filter(id=row_id).update(secrets={})
                        self.stderr.write(f"{what} {row_id}: unreadable; its credentials were emptied: enter them again")
                    continue
                row.save(update_fields=["secrets"])
                done += 1
            self.stdout.write(f"{done} {what}(s) re-encrypted under the current key")
        if unreadable and not forget_unreadable:
            self.stderr.write(f"{unreadable} value(s) could not be read: list the key they were written with, "
                              "or run again with --forget-unreadable")
