"""Sign up, log in, log out, password reset (mail through a real SMTP server)."""
import re

from django.contrib.auth import get_user_model
from django.urls import reverse

from bots.models import Membership, Organization


def test_it_signs_up_a_user_with_an_organisation_and_logs_them_in(client, db):
    response = client.post(
        reverse("signup"),
        {
            "username": "dana",
            "email": "dana@example.com",
            "organization_name": "Dana's Donuts",
            "password1": "a-long-passphrase-42",
            "password2": "a-long-passphrase-42",
        },
    )
    assert response.status_code == 302 and response["Location"] == reverse("bots:list")
    user = get_user_model().objects.get(username="dana")
    membership = Membership.objects.get(user=user)
    assert membership.role == "owner" and membership.organization.name == "Dana's Donuts"
    assert client.get(reverse("org:members")).status_code == 200  # signed in


def test_it_rejects_a_bad_signup_without_creating_anything(client, db):
    response = client.post(
        reverse("signup"),
        {"username": "dana", "email": "not-an-email", "organization_name": "", "password1": "x", "password2": "y"},
    )
    assert response.status_code == 200 and b"errorlist" in response.content
    assert not get_user_model().objects.exists() and not Organization.objects.exists()


def test_it_logs_in_and_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 302
    assert client.get(reverse("inbox:list")).status_code == 200
    client.post(reverse("logout"))
    response = client.get(reverse("inbox:list"))
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


def test_it_refuses_a_wrong_password(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert client.get(reverse("inbox:list")).status_code == 302


def test_it_resets_a_password_by_email(client, alice, smtp_settings):
    response = client.post(reverse("password_reset"), {"email": "alice@example.com"})
    assert response.status_code == 302
    assert len(smtp_settings.messages) == 1
    mail = smtp_settings.messages[0]
    assert mail["to"] == ["alice@example.com"]
    link = re.search(r"https?://[^/\s]+(/accounts/password/reset/\S+/)", mail["message"].get_content()).group(1)
    response = client.get(link, follow=True)  # Django swaps the token for a session and redirects
    form_url = response.redirect_chain[-1][0]
    response = client.post(form_url, {"new_password1": "new-secret-passphrase", "new_password2": "new-secret-passphrase"})
    assert response.status_code == 302
    assert client.login(username="alice", password="new-secret-passphrase")


def test_it_does_not_reveal_unknown_emails_on_reset(client, db, smtp_settings):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302 and smtp_settings.messages == []
