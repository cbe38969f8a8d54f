"""Sign-up does not say whether an address has an account (password reset never did): where mail
leaves the server, every valid sign-up is answered "check your email", and the address gets a mail —
a link that makes the account (a new address), or a note to its holder that someone tried to sign up
with it, with links to log in and reset the password (nothing made, nothing of theirs changed).
The password is chosen on the link's page, by whoever holds the mailbox: whoever filled in the form
with someone else's address has no way into the account its owner then makes.
Mail through a real SMTP server (aiosmtpd)."""
import html
import itertools
import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from bots import membership as members
from bots.models import Membership, Organization

PASSWORD = "x9!kq-Lm2#pz-long"  # what the sign-up form is sent with (the form there asks for none)
CHOSEN = "v7?rt-Qw4&hb-mailbox"  # what the link's page is sent with
_numbers = itertools.count(1)
LINK = r"/accounts/signup/[^\s/]+/"


def sign_up(client, email, username=None):
    username = username or f"newcomer{next(_numbers)}"
    return client.post(reverse("signup"), {"username": username, "email": email, "organization_name": "Zed's",
                                           "password1": PASSWORD, "password2": PASSWORD})


def mailed(mailbox, to):
    (mail,) = [m["message"] for m in mailbox.messages if m["to"] == [to]]
    return mail["subject"], mail.get_content()


def confirm(client, link, password=CHOSEN, again=None):
    return client.post(link, {"password1": password, "password2": again or password})


def fresh_address():
    return f"someone{next(_numbers)}@else.example"  # each test its own: the mails per address are counted


@pytest.fixture
def holder(charlie):
    """Charlie (Globex's owner), at an address of this test's own."""
    charlie.email = fresh_address()
    charlie.save(update_fields=["email"])
    return charlie


def test_a_taken_address_is_answered_as_a_new_one_and_its_holder_is_told(client, holder, smtp_settings):
    charlie, new = holder, fresh_address()
    stored = get_user_model().objects.get(id=charlie.id)

    taken_answer, new_answer = sign_up(client, charlie.email.upper()), sign_up(client, new)
    assert taken_answer.status_code == new_answer.status_code == 302
    assert taken_answer["Location"] == new_answer["Location"] == reverse("signup-sent")
    page = client.get(reverse("signup-sent")).content.decode()
    assert "Check your email" in page and "already" not in page
    assert get_user_model().objects.count() == 1 and Organization.objects.count() == 1  # charlie's only

    subject, text = mailed(smtp_settings, charlie.email)  # as stored, not as typed
    assert subject == "Someone tried to sign up to ChatNexus with your address"
    assert "It already has an account: charlie." in text
    assert "/accounts/login/" in text and "/accounts/password/reset/" in text
    assert "/accounts/signup/" not in text  # no link that makes anything
    charlie.refresh_from_db()
    assert (charlie.email, charlie.password) == (stored.email, stored.password)
    assert list(Membership.objects.filter(user=charlie).values_list("role", flat=True)) == ["owner"]
    subject, _ = mailed(smtp_settings, new)
    assert subject == "Confirm your address to finish signing up to ChatNexus"


def test_the_mailed_link_makes_the_account_once_and_signs_in(client, db, smtp_settings):
    address = fresh_address()
    assert sign_up(client, address, username="zed")["Location"] == reverse("signup-sent")
    _, text = mailed(smtp_settings, address)
    link = re.search(rf"https?://[^/\s]+({LINK})", text).group(1)
    assert "Zed's" not in text  # what anyone typed is not mailed to the address they typed
    assert "zed" in client.get(link).content.decode()  # opening it (a mail scanner too) makes nothing
    assert not get_user_model().objects.exists()

    made = confirm(client, link)
    assert made.status_code == 302 and made["Location"] == reverse("bots:list")
    user = get_user_model().objects.get(username="zed")
    assert user.email == address and user.check_password(CHOSEN)
    assert Membership.objects.get(user=user).organization.name == "Zed's"
    assert client.get(reverse("org:members")).status_code == 200  # signed in
    assert confirm(client, link).status_code == 404  # once


def test_the_password_is_chosen_by_whoever_holds_the_mailbox(client, db, smtp_settings):
    """The reviewer's pre-hijacking: someone signs up with another's address and a password of theirs;
    its owner, mailed "confirm your address", follows the link. The account is made with the password
    its owner types on the link's page; the form-filler's never works."""
    stranger, owner, address = client, Client(), fresh_address()
    assert "password1" not in stranger.get(reverse("signup")).content.decode()  # the form asks for none
    sign_up(stranger, address, username="corp-support")
    _, text = mailed(smtp_settings, address)
    link = re.search(LINK, text).group(0)
    assert "password_hash" not in members.pending_sign_up(link.split("/")[-2])  # no password waits meanwhile

    page = html.unescape(owner.get(link).content.decode())
    assert "corp-support" in page and "Zed's" in page and 'name="password1"' in page  # what it makes, and asks
    unsent = owner.post(link)
    assert unsent.status_code == 200 and "This field is required." in unsent.content.decode()
    assert "too similar" in confirm(owner, link, "corp-support1").content.decode()  # the password validators
    assert "didn’t match" in confirm(owner, link, again=CHOSEN + "!").content.decode()
    assert not get_user_model().objects.exists()  # none of these made anything, nor used the link up

    assert confirm(owner, link).status_code == 302
    user = get_user_model().objects.get(email=address)
    assert user.check_password(CHOSEN) and not user.check_password(PASSWORD)
    assert not stranger.login(username="corp-support", password=PASSWORD)


def test_a_link_whose_address_got_an_account_meanwhile_makes_none(client, db, smtp_settings):
    """Two sign-ups with one address (the form sent again, the first mail not seen yet): the first link
    used makes the account, the other one then makes nothing."""
    address = fresh_address()
    sign_up(client, address, username="first")
    sign_up(client, address, username="second")
    texts = "".join(m["message"].get_content() for m in smtp_settings.messages)
    links = re.findall(LINK, texts)
    assert len(links) == 2
    assert confirm(client, links[1]).status_code == 302
    client.logout()
    refused = confirm(client, links[0])
    assert refused.status_code == 409 and "This address has an account now" in refused.content.decode()
    assert list(get_user_model().objects.values_list("username", flat=True)) == ["second"]


def test_mails_to_one_address_are_capped_whatever_it_holds(client, holder, settings, smtp_settings):
    settings.CHATNEXUS_PASSWORD_RESETS_PER_EMAIL = 2
    new = fresh_address()
    for _ in range(3):
        assert sign_up(client, holder.email)["Location"] == sign_up(client, new)["Location"] == reverse("signup-sent")
    assert sorted(m["to"][0] for m in smtp_settings.messages) == sorted([holder.email, new] * 2)
