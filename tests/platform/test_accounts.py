"""Sign up, log in, log out, password reset (mail through a real SMTP server)."""
import itertools
import re

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from bots.models import Membership, Organization
from tests.conftest import make_member


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
    assert 'id="mail-off"' not in client.get(response["Location"]).content.decode()  # mail is set up here


def test_without_mail_set_up_the_reset_page_says_where_the_link_went_for_any_address(client, alice, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"  # the embedded default
    pages = [client.get(client.post(reverse("password_reset"), {"email": email})["Location"]).content.decode()
             for email in ("alice@example.com", "nobody@example.com")]
    assert 'id="mail-off"' in pages[0] and "went to its log" in pages[0]
    assert pages[0] == pages[1]  # the same words whether or not the address has an account


# --- limits (bots/views/accounts.py): counters live in the cache (shared by the whole run),
# so each test signs in as a user, and from an address, of its own

_numbers = itertools.count(1)


@pytest.fixture
def address():
    return f"198.51.100.{next(_numbers)}"


@pytest.fixture
def user(acme):
    return make_member(acme, f"limited{next(_numbers)}", "agent")  # password "correct-horse-battery"


def test_a_username_that_keeps_failing_is_paused_even_for_the_right_password(client, acme, user, settings, address):
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    for _ in range(3):
        response = client.post(reverse("login"), {"username": user.username, "password": "wrong"}, REMOTE_ADDR=address)
        assert response.status_code == 200 and not response.wsgi_request.user.is_authenticated
    response = client.post(reverse("login"), {"username": f" {user.username.upper()}", "password": "correct-horse-battery"},
                           REMOTE_ADDR="203.0.113.9")  # another address, the name spelt differently
    assert response.status_code == 429 and b"Too many sign-in attempts" in response.content
    assert 0 < int(response["Retry-After"]) <= 2 * 15 * 60  # the failures slide out of a 15-minute window
    assert not response.wsgi_request.user.is_authenticated
    other = make_member(acme, f"limited{next(_numbers)}", "agent")
    response = client.post(reverse("login"), {"username": other.username, "password": "correct-horse-battery"},
                           REMOTE_ADDR=address)
    assert response.status_code == 302  # other accounts are not affected


def test_a_look_alike_spelling_of_a_paused_username_is_paused_too(client, user, settings, address):
    """Django signs "ｌｉｍｉｔｅｄ7" (fullwidth) in as limited7 (NFKC): it must not get a fresh counter."""
    import unicodedata

    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    for _ in range(3):
        client.post(reverse("login"), {"username": user.username, "password": "wrong"}, REMOTE_ADDR=address)
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in user.username)
    assert unicodedata.normalize("NFKC", fullwidth) == user.username
    response = client.post(reverse("login"), {"username": fullwidth, "password": "correct-horse-battery"},
                           REMOTE_ADDR="203.0.113.10")
    assert response.status_code == 429 and not response.wsgi_request.user.is_authenticated


def test_the_reset_link_is_the_public_address_even_behind_a_tls_proxy(client, alice, settings, smtp_settings):
    settings.PUBLIC_URL = "https://chat.example.com"
    client.post(reverse("password_reset"), {"email": "alice@example.com"})  # the request itself is plain http
    [mail] = smtp_settings.messages
    assert "https://chat.example.com/accounts/password/reset/" in mail["message"].get_content()


def test_successful_sign_ins_do_not_count_as_failures(client, user, settings, address):
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 2
    for _ in range(4):
        response = client.post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"},
                               REMOTE_ADDR=address)
        assert response.status_code == 302
        client.logout()


def test_an_address_that_posts_too_often_is_refused_per_form(client, db, settings, address):
    settings.CHATNEXUS_AUTH_POSTS_PER_IP = 2
    for _ in range(2):
        assert client.post(reverse("login"), {"username": "x", "password": "y"}, REMOTE_ADDR=address).status_code == 200
    assert client.post(reverse("login"), {"username": "z", "password": "y"}, REMOTE_ADDR=address).status_code == 429
    assert client.post(reverse("login"), {"username": "z", "password": "y"}, REMOTE_ADDR="203.0.113.7").status_code == 200
    signup = {"username": "dana", "email": "dana@example.com", "organization_name": "Dana's",
              "password1": "a-long-passphrase-42", "password2": "a-long-passphrase-42"}
    for _ in range(2):  # the sign-up form has its own count
        assert client.post(reverse("signup"), {**signup, "password2": "typo"}, REMOTE_ADDR=address).status_code == 200
    response = client.post(reverse("signup"), signup, REMOTE_ADDR=address)
    assert response.status_code == 429 and b"Too many sign-up attempts" in response.content
    assert not get_user_model().objects.filter(username="dana").exists()


def test_the_addresses_of_one_ipv6_64_share_one_count(client, db, settings):
    """A home or a rented server has a whole /64: each of its addresses counted apart, it was not limited."""
    settings.CHATNEXUS_AUTH_POSTS_PER_IP = 2
    for host in (1, 2):
        assert client.post(reverse("login"), {"username": "x", "password": "y"},
                           REMOTE_ADDR=f"2001:db8:7:7::{host}").status_code == 200
    assert client.post(reverse("login"), {"username": "x", "password": "y"},
                       REMOTE_ADDR="2001:db8:7:7:ffff::3").status_code == 429
    assert client.post(reverse("login"), {"username": "x", "password": "y"},
                       REMOTE_ADDR="2001:db8:7:8::1").status_code == 200  # the next /64: someone else


def test_reset_mails_to_one_address_are_capped_without_saying_so(client, user, settings, smtp_settings, address):
    settings.CHATNEXUS_PASSWORD_RESETS_PER_EMAIL = 2
    for _ in range(4):
        response = client.post(reverse("password_reset"), {"email": user.email}, REMOTE_ADDR=address)
        assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert [m["to"] for m in smtp_settings.messages] == [[user.email]] * 2


def test_a_long_s_spelling_of_an_address_shares_its_reset_cap(client, acme, settings, smtp_settings, address):
    """"ſ" (long s) folds to s: Django mails the same account, so it must be the same count."""
    settings.CHATNEXUS_PASSWORD_RESETS_PER_EMAIL = 1
    sam = make_member(acme, f"sam{next(_numbers)}", "agent")
    client.post(reverse("password_reset"), {"email": sam.email}, REMOTE_ADDR=address)
    client.post(reverse("password_reset"), {"email": sam.email.replace("s", "ſ", 1)}, REMOTE_ADDR=address)
    assert [m["to"] for m in smtp_settings.messages] == [[sam.email]]


def test_your_name_in_the_top_bar_opens_your_account_with_your_organisations(client, alice, charlie, globex):
    Membership.objects.create(user=alice, organization=globex, role="agent")
    client.force_login(alice)
    bots_page = client.get(reverse("bots:list")).content.decode()
    assert f'<a href="{reverse("account")}" id="account-link"' in bots_page
    page = client.get(reverse("account"))
    text = page.content.decode()
    assert page.status_code == 200
    assert "alice" in text and "Acme — Owner" in text and "Globex — Agent" in text
    assert reverse("password_change") in text and reverse("api-token") in text
    assert "Switch organisation" in text
    assert "charlie" not in text  # another organisation's member is not listed
    client.post(reverse("switch-organization"), {"organization": globex.id})
    assert client.get(reverse("account")).context["organization"] == globex
    client.logout()
    assert client.get(reverse("account"))["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("page,section", [("bots:list", "Bots"), ("inbox:list", "Inbox"), ("dashboards:org", "Dashboard"),
                                          ("org:members", "Team"), ("account", None)])
def test_the_top_bar_marks_the_section_you_are_in(client, alice, page, section):
    client.force_login(alice)
    html = client.get(reverse(page)).content.decode()
    current = re.findall(r'<a href="[^"]*" aria-current="page">([^<]+)</a>', html)
    assert current == ([section] if section else [])


def test_guesses_sent_at_once_are_counted_before_their_passwords_are_checked(transactional_db, acme, settings):
    """A real password hash takes a while; guesses sent in parallel must not all pass the
    limit's check before the first of them is counted (the suite's MD5 would hide this)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth.hashers import make_password
    from django.test import Client

    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher",
                                 "django.contrib.auth.hashers.MD5PasswordHasher"]
    user = make_member(acme, f"limited{next(_numbers)}", "agent")
    user.password = make_password("correct-horse-battery", hasher="pbkdf2_sha256")  # Django's default, slow
    user.save(update_fields=["password"])

    def guess(n):
        return Client().post(reverse("login"), {"username": user.username, "password": f"wrong-{n}"},
                             REMOTE_ADDR=f"203.0.113.{100 + n}").status_code

    with ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(guess, range(8)))
    assert codes == [200] * 3 + [429] * 5  # three guesses checked, however they were timed
    response = Client().post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"})
    assert response.status_code == 429  # still paused: the refused guesses were no checks


def test_the_right_password_and_refused_tries_do_not_use_up_the_failures(client, user, settings, address):
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 2
    client.post(reverse("login"), {"username": user.username, "password": "wrong"}, REMOTE_ADDR=address)
    for _ in range(3):
        assert client.post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"},
                           REMOTE_ADDR=address).status_code == 302
        client.logout()
    assert client.post(reverse("login"), {"username": user.username, "password": "wrong"},
                       REMOTE_ADDR=address).status_code == 200  # the second failure: still within 2
    assert client.post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"},
                       REMOTE_ADDR=address).status_code == 429


def test_wrong_old_passwords_on_change_password_are_limited_like_sign_ins(client, user, settings, address):
    """A stolen session cannot guess the password through *Change password* faster than through sign-in."""
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    client.force_login(user)
    new = {"new_password1": "a-new-passphrase-77", "new_password2": "a-new-passphrase-77"}
    mismatched = {"old_password": "correct-horse-battery", "new_password1": "a-new-passphrase-77", "new_password2": "x"}
    assert client.post(reverse("password_change"), mismatched).status_code == 200  # the right old one: not a failure
    for n in range(3):
        response = client.post(reverse("password_change"), {"old_password": f"guess-{n}", **new})
        assert response.status_code == 200 and "old_password" in response.context["form"].errors
    limited = client.post(reverse("password_change"), {"old_password": "correct-horse-battery", **new})
    assert limited.status_code == 429 and b"Too many password attempts" in limited.content
    user.refresh_from_db()
    assert user.check_password("correct-horse-battery")  # unchanged
    client.logout()
    assert client.post(reverse("login"), {"username": user.username, "password": "correct-horse-battery"},
                       REMOTE_ADDR=address).status_code == 429  # the same account's limit


def test_the_admins_change_password_is_ours_so_guesses_there_are_limited_too(client, user, settings):
    """Django's admin had a password change of its own, which counted no wrong old password: a stolen
    staff session could guess there without limit. Its link and form now lead to ours."""
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    client.force_login(user)
    page = client.get(reverse("admin:password_change"), follow=True)
    assert page.redirect_chain == [(reverse("password_change"), 302)] and "old_password" in page.context["form"].fields
    new = {"new_password1": "a-new-passphrase-77", "new_password2": "a-new-passphrase-77"}
    for n in range(5):  # more than the limit: none of them is checked there
        guess = client.post(reverse("admin:password_change"), {"old_password": f"guess-{n}", **new})
        assert guess.status_code == 302 and guess["Location"] == reverse("password_change")
    client.post(reverse("admin:password_change"), {"old_password": "correct-horse-battery", **new})
    user.refresh_from_db()
    assert user.check_password("correct-horse-battery")  # changed only on ours, which counts the guesses
    for n in range(3):
        client.post(reverse("password_change"), {"old_password": f"guess-{n}", **new})
    assert client.post(reverse("password_change"), {"old_password": "correct-horse-battery", **new}).status_code == 429
