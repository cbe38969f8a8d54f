"""The inbox's "Send the re-engagement template" button sends the template once per rendered button:
a double-click, or the form sent again, stores (and so delivers) one template message, and the second
post says nothing wrong happened."""
import re

from bots.models import Message

from .test_whatsapp_window import customer_wrote, with_template


def test_the_reengagement_button_clicked_twice_sends_the_template_once(client, alice, whatsapp_channel):
    with_template(whatsapp_channel)
    conversation = customer_wrote(whatsapp_channel, hours_ago=30)
    client.force_login(alice)
    page = client.get(f"/inbox/{conversation.id}/").content.decode()
    notice = page[page.index('id="channel-notice"'):]
    found = re.search(r'name="form_token" value="([^"]+)"', notice)
    token = found.group(1) if found else ""
    link = f"/channels/whatsapp/conversations/{conversation.id}/reengage/"
    first = client.post(link, {"form_token": token}, follow=True).content.decode()
    second = client.post(link, {"form_token": token}, follow=True)
    assert "Re-engagement template queued" in first
    assert second.redirect_chain == [(f"/inbox/{conversation.id}/", 302)]
    assert "has no re-engagement template" not in second.content.decode()
    assert Message.objects.filter(conversation=conversation, direction="out").count() == 1
