"""A customer writing while the team has a conversation: its assignee is emailed; when the assignee
takes no such emails (turned them off, or is no longer a member), the members who do are emailed
instead, as for a conversation nobody has (before, nobody heard of it). Real SMTP (aiosmtpd)."""
from bots import services
from bots.models import Conversation, Membership
from bots.tasks import notify_team_of_message
from tests.conftest import make_member


def assigned_to_bob(acme, acme_bot, bob, thread):
    """A conversation Bob answered (so it is his), the bot paused; Carol, who takes no emails, is in the team."""
    Membership.objects.filter(user=make_member(acme, f"carol-{thread}", "agent")).update(notify_by_email=False)
    handoff = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text="Can I talk to a human?")
    conversation = Conversation.objects.get(id=handoff.conversation.id)
    services.agent_reply(conversation, bob, "Bob here.")
    assert Conversation.objects.get(id=conversation.id).assignee == bob
    return conversation


def customer_writes(acme_bot, thread, text):
    later = services.receive(bot=acme_bot, channel="widget", thread_id=thread, text=text)
    notify_team_of_message(later.message.id)  # run here, as the worker would


def test_the_team_is_emailed_when_the_assignee_turned_emails_off(db, smtp_settings, client, alice, bob, acme,
                                                                   acme_bot):
    conversation = assigned_to_bob(acme, acme_bot, bob, "opted-out")
    customer_writes(acme_bot, "opted-out", "Thanks, and the price?")
    assert [m["to"] for m in smtp_settings.messages] == [["bob@example.com"]]  # his, while he takes them
    assert "in a conversation assigned to you;" in smtp_settings.messages[0]["message"].get_content()

    client.force_login(bob)
    client.post("/accounts/notifications/", {})  # nothing ticked: Bob takes no emails from now on
    services.agent_reply(Conversation.objects.get(id=conversation.id), bob, "It is 40 euros.")
    customer_writes(acme_bot, "opted-out", "And do you deliver?")
    assert [m["to"] for m in smtp_settings.messages[1:]] == [["alice@example.com"]]  # not Bob, not Carol
    body = smtp_settings.messages[1]["message"].get_content()
    assert "in a conversation assigned to bob (who gets no such emails);" in body and "And do you deliver?" in body


def test_the_team_is_emailed_when_the_assignee_is_no_longer_a_member(db, smtp_settings, alice, bob, acme, acme_bot):
    assigned_to_bob(acme, acme_bot, bob, "left")
    Membership.objects.filter(user=bob, organization=acme).delete()  # as staff remove it in the admin
    customer_writes(acme_bot, "left", "Hello? Anyone?")
    assert [m["to"] for m in smtp_settings.messages] == [["alice@example.com"]]
