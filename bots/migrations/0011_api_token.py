"""API tokens stored as digests: existing DRF tokens (plaintext) become ApiToken rows with the
same token's SHA-256, so clients keep working, and the plaintext rows are deleted."""
import hashlib

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def hash_existing_tokens(apps, schema_editor):
    Token = apps.get_model("authtoken", "Token")
    ApiToken = apps.get_model("bots", "ApiToken")
    for token in Token.objects.all():
        ApiToken.objects.create(user_id=token.user_id, digest=hashlib.sha256(token.key.encode()).hexdigest(),
                                start=token.key[:12])
    Token.objects.all().delete()


class Migration(migrations.Migration):

    dependencies = [
        ('bots', '0010_note_sender'),
        ('authtoken', '0004_alter_tokenproxy_options'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ApiToken',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('digest', models.CharField(max_length=64, unique=True)),
                ('start', models.CharField(max_length=16)),
                ('created', models.DateTimeField(auto_now_add=True)),
                ('last_used', models.DateTimeField(blank=True, null=True)),
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name='api_token', to=settings.AUTH_USER_MODEL)),
            ],
        ),
        migrations.RunPython(hash_existing_tokens, migrations.RunPython.noop),
    ]
