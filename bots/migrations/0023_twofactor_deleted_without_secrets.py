"""A second factor goes with its user without its secret being read (``cascade_without_secrets``): one
that no listed key decrypts no longer makes deleting its user a 500. No change to the database."""
from django.conf import settings
from django.db import migrations, models

import bots.models.tenants


class Migration(migrations.Migration):

    dependencies = [
        ("bots", "0022_invitation_digest"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterField(
            model_name="twofactor",
            name="user",
            field=models.OneToOneField(on_delete=bots.models.tenants.cascade_without_secrets,
                                       related_name="two_factor", to=settings.AUTH_USER_MODEL),
        ),
    ]
