"""``manage.py reencrypt_secrets``: rewrite every stored secret (channel credentials, second
factors) under the current encryption key, after a rotation (channels_app/crypto.py).

Values written under an earlier key are read through ``CHATNEXUS_ENCRYPTION_OLD_KEYS`` and
``SECRET_KEY_FALLBACKS``; once this has run, those can be removed. A value no listed key decrypts
is named and left as it is, and the command fails (a non-zero exit: the old keys are still needed);
``--forget-unreadable`` drops it instead: a channel's credentials are emptied (to be entered again
on its Channels page), a second factor is removed (its user signs in with the password alone and
can turn it on again). The counts name the rows whose secrets were rewritten (a channel with none
is rewritten too, uncounted).
"""
from django.core.management.base import BaseCommand, CommandError

from bots.models import TwoFactor
from channels_app.crypto import UnreadableSecrets
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
                row = model.objects.get(id=row_id)
                if isinstance(row.secrets, UnreadableSecrets):  # no listed key opens it
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
                row.save(update_fields=["secrets"])  # an empty one too: else it stays under the key about to go
                done += bool(row.secrets)
            self.stdout.write(f"{done} {what}(s) re-encrypted under the current key")
        if unreadable and not forget_unreadable:  # a non-zero exit: "reencrypt_secrets && drop the old keys" stops here
            raise CommandError(f"{unreadable} value(s) could not be read: list the key they were written with, "
                               "or run again with --forget-unreadable")
