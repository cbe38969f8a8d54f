"""Messages get a ``version``: higher after every insert and update of the row, from one counter for all
messages, so the inbox's thread page polls for what changed since the highest it holds. A trigger
numbers it, not the model: most writes are a queryset's ``update()`` (a delivery status, a reply
state, a rating), which runs no Python of the model. Existing messages are numbered here.

PostgreSQL: a sequence and a BEFORE INSERT OR UPDATE trigger. SQLite (the embedded shape, one writer
at a time) has no sequences: a one-row counter table and AFTER triggers. SQLite drops a table's
triggers when Django remakes the table (a later migration adding a NOT NULL field to Message, say):
such a migration must call ``create_triggers`` again (tests/platform/test_inbox_poll_sqlite.py
migrates a SQLite database and says so)."""
from django.db import migrations, models

POSTGRESQL = [
    "CREATE SEQUENCE bots_message_version_seq OWNED BY bots_message.version",
    """CREATE FUNCTION bots_message_next_version() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
           NEW.version := nextval('bots_message_version_seq');
           RETURN NEW;
       END $$""",
    """CREATE TRIGGER bots_message_version BEFORE INSERT OR UPDATE ON bots_message
       FOR EACH ROW EXECUTE FUNCTION bots_message_next_version()""",
]
POSTGRESQL_DROP = [
    "DROP TRIGGER IF EXISTS bots_message_version ON bots_message",
    "DROP FUNCTION IF EXISTS bots_message_next_version()",
    "DROP SEQUENCE IF EXISTS bots_message_version_seq",
]

# The triggers' own UPDATE does not fire them again (SQLite's recursive_triggers is off; were it on, the
# WHEN would stop it: the number it sets is higher than the old one, what a writer sets never is).
_SQLITE_NEXT = """BEGIN
    UPDATE bots_message_version_counter SET value = value + 1;
    UPDATE bots_message SET version = (SELECT value FROM bots_message_version_counter) WHERE id = NEW.id;
END"""
SQLITE = [
    "CREATE TABLE IF NOT EXISTS bots_message_version_counter (value integer NOT NULL)",
    """INSERT INTO bots_message_version_counter (value)
       SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM bots_message_version_counter)""",
    f"CREATE TRIGGER IF NOT EXISTS bots_message_version_insert AFTER INSERT ON bots_message {_SQLITE_NEXT}",
    f"""CREATE TRIGGER IF NOT EXISTS bots_message_version_update AFTER UPDATE ON bots_message
        WHEN NEW.version <= OLD.version {_SQLITE_NEXT}""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS bots_message_version_insert",
    "DROP TRIGGER IF EXISTS bots_message_version_update",
    "DROP TABLE IF EXISTS bots_message_version_counter",
]


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"messages' versions are numbered on PostgreSQL and SQLite, not {vendor}")
    for statement in POSTGRESQL if vendor == "postgresql" else SQLITE:
        schema_editor.execute(statement, params=None)
    schema_editor.execute("UPDATE bots_message SET version = 0", params=None)  # the triggers number them


def drop_triggers(apps, schema_editor):
    for statement in POSTGRESQL_DROP if schema_editor.connection.vendor == "postgresql" else SQLITE_DROP:
        schema_editor.execute(statement, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ("bots", "0023_twofactor_deleted_without_secrets"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="version",
            field=models.BigIntegerField(default=0, editable=False),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["conversation", "version"], name="message_versions"),
        ),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
