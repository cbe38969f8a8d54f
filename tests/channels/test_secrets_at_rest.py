"""Channel secrets stay encrypted wherever the database's rows go: a ``dumpdata`` backup too."""
import json
from io import StringIO

from django.core.management import call_command

from channels_app.models import ChannelConfig

from .conftest import AUTH_TOKEN


def test_a_dump_of_the_database_holds_secrets_encrypted_and_loads_back(whatsapp_channel, tmp_path):
    dump = StringIO()
    call_command("dumpdata", "channels_app.channelconfig", stdout=dump)
    assert AUTH_TOKEN not in dump.getvalue()  # Django's default wrote str(dict): the token in clear
    [row] = json.loads(dump.getvalue())
    ChannelConfig.objects.all().delete()
    fixture = tmp_path / "dump.json"
    fixture.write_text(json.dumps([row]))
    call_command("loaddata", str(fixture), verbosity=0)
    assert ChannelConfig.objects.get().secrets == {"auth_token": AUTH_TOKEN}
