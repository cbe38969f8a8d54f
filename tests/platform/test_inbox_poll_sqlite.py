"""Messages' versions (what the thread page's poll asks past) on the embedded default's SQLite database: the
migrations apply there and leave its triggers numbering every insert and update. A later migration that
remakes bots_message on SQLite (Django does for a NOT NULL field added to Message) drops the triggers with
the old table: it must create them again (0024_message_version.create_triggers), or this fails."""
import json
import subprocess
import sys

from tests.conftest import ROOT, embedded_env, manage

WRITES = """
import json
import django
django.setup()
from bots.models import Bot, Conversation, Message, Organization

org = Organization.objects.create(name="Acme", slug="acme")
bot = Bot.objects.create(organization=org, name="Ava")
conversation = Conversation.objects.create(organization=org, bot=bot, channel="widget", external_id="v1")

def new(text):
    return Message.objects.create(organization=org, bot=bot, conversation=conversation, channel="widget",
                                  direction="in", sender="customer", text=text)

def version(message):
    return Message.objects.values_list("version", flat=True).get(id=message.id)

first, second = new("Hello"), new("Anyone?")
seen = [version(first), version(second)]
Message.objects.filter(id=first.id).update(reply_state="done")  # a queryset's update
seen.append(version(first))
second.text = "Anyone there?"
second.save()  # every field, version 0 among them
seen.append(version(second))
second.delete()  # the highest gone: not used again
seen.append(version(new("Still there?")))
print(json.dumps(seen))
"""


def test_the_migrations_leave_sqlite_numbering_every_write(tmp_path):
    env = embedded_env(tmp_path)
    manage(env, "migrate", "--verbosity", "0")
    done = subprocess.run([sys.executable, "-c", WRITES], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen[0] > 0 and seen == sorted(set(seen)), seen
