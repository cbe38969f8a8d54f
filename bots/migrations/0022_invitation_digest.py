"""Invitations stored as digests: each pending invitation's token becomes its SHA-256 (as API tokens'
in 0011), so the links already sent keep working, and the clear tokens are dropped.

Backwards, the clear tokens cannot come back: each invitation gets a new one, and the links sent
before stop working."""
import hashlib
import secrets

from django.db import migrations, models

import bots.models.tenants


def digest_existing_tokens(apps, schema_editor):
    Invitation = apps.get_model("bots", "Invitation")
    for invitation in Invitation.objects.all():
        invitation.digest = hashlib.sha256(invitation.token.encode()).hexdigest()
        invitation.save(update_fields=["digest"])


def new_clear_tokens(apps, schema_editor):
    Invitation = apps.get_model("bots", "Invitation")
    for invitation in Invitation.objects.all():
        invitation.token = secrets.token_urlsafe(32)
        invitation.save(update_fields=["token"])


class Migration(migrations.Migration):

    dependencies = [
        ('bots', '0021_membership_notify_by_email'),
    ]

    operations = [
        migrations.AddField(
            model_name='invitation',
            name='digest',
            field=models.CharField(max_length=64, null=True),
        ),
        # nullable and not unique for a moment, so that going back can add it again before filling it
        migrations.AlterField(
            model_name='invitation',
            name='token',
            field=models.CharField(max_length=64, null=True),
        ),
        migrations.RunPython(digest_existing_tokens, new_clear_tokens),
        migrations.RemoveField(
            model_name='invitation',
            name='token',
        ),
        migrations.AlterField(
            model_name='invitation',
            name='digest',
            field=models.CharField(default=bots.models.tenants._unknown_token_digest, max_length=64, unique=True),
        ),
    ]
