"""A reply task's start is beaten in a table of its own (``ReplyBeat``), no longer in its message's
``meta``: a beat there was a write to the message's row, which moved its version (0024) every few
seconds while the model answered. A new table: bots_message is not remade, on SQLite neither (its
version triggers stay). A start the version before beat in a message's meta has no beat here: a task
of that version answering during the update is taken for gone at once."""
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("bots", "0024_message_version"),
    ]

    operations = [
        migrations.CreateModel(
            name="ReplyBeat",
            fields=[
                ("message", models.OneToOneField(db_constraint=False, on_delete=django.db.models.deletion.CASCADE,
                                                 primary_key=True, related_name="+", serialize=False,
                                                 to="bots.message")),
                ("start", models.CharField(max_length=40)),
                ("started_at", models.DateTimeField()),
                ("alive_at", models.DateTimeField()),
            ],
        ),
    ]
