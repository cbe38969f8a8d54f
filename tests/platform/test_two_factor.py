"""Two-factor sign-in: turned on from your account with an authenticator app's code (computed here
with pyotp, as the app would), then asked for after the password; a code works once, a recovery
code works once, wrong codes are limited like wrong passwords, the secret is encrypted at rest."""
import itertools
import re
import time

import pyotp
import pytest
from django.db import connection
from django.urls import reverse

from bots.models import TwoFactor
from tests.conftest import make_member

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"  # make_member's
_numbers = itertools.count(1)


@pytest.fixture
def alice(acme, client):
    """An owner of her own for each test, signing in from her own address: the sign-in limits
    count per username and per address on the shared cache, across the whole run."""
    n = next(_numbers)
    client.defaults["REMOTE_ADDR"] = f"198.51.100.{100 + n}"
    return make_member(acme, f"twofactor{n}", "owner")


@pytest.fixture
def bob(acme):
    return make_member(acme, f"plain{next(_numbers)}", "agent")


def turn_on(client, user):
    client.force_login(user)
    page = client.get(reverse("two-factor"))
    assert page.status_code == 200 and "<svg" in page.content.decode()  # the QR code to scan
    secret = re.search(r'id="two-factor-secret">([A-Z2-7 ]+)<', page.content.decode()).group(1).replace(" ", "")
    wrong = client.post(reverse("two-factor"), {"action": "enable", "code": "000000", "password": PASSWORD})
    assert wrong.status_code == 400 and "That code does not match" in wrong.content.decode()
    assert not TwoFactor.objects.filter(user=user).exists()
    done = client.post(reverse("two-factor"),
                       {"action": "enable", "code": pyotp.TOTP(secret).now(), "password": PASSWORD})
    codes = re.findall(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>", done.content.decode())
    assert done.status_code == 200 and len(codes) == 10
    client.logout()
    return secret, codes


def password_step(client, user, next_url=""):
    response = client.post(reverse("login"), {"username": user.username, "password": PASSWORD, "next": next_url})
    assert response.status_code == 302 and response["Location"] == reverse("login-code")
    assert client.get(reverse("bots:list")).status_code == 302  # not signed in yet
    return response


def test_turned_on_it_asks_for_a_code_after_the_password(client, alice):
    secret, _ = turn_on(client, alice)
    password_step(client, alice, next_url="/inbox/")
    page = client.get(reverse("login-code"))
    assert page.status_code == 200 and alice.username in page.content.decode()
    assert client.post(reverse("login-code"), {"code": "123456"}).status_code == 400
    # the code of the step after the one used to turn it on (that one is spent)
    code = pyotp.TOTP(secret).at(time.time() + 30)
    response = client.post(reverse("login-code"), {"code": code})
    assert response.status_code == 302 and response["Location"] == "/inbox/"
    assert client.get(reverse("bots:list")).status_code == 200

    client.logout()
    password_step(client, alice)
    again = client.post(reverse("login-code"), {"code": code})  # seen over a shoulder: spent
    assert again.status_code == 400 and "was used already" in again.content.decode()


def test_a_recovery_code_works_once_and_new_ones_replace_the_old(client, alice):
    _, codes = turn_on(client, alice)
    password_step(client, alice)
    response = client.post(reverse("login-code"), {"code": codes[0].upper()})
    assert response.status_code == 302
    assert "9 left" in client.get(response["Location"], follow=True).content.decode()
    client.logout()
    password_step(client, alice)
    assert client.post(reverse("login-code"), {"code": codes[0]}).status_code == 400

    client.force_login(alice)
    assert "That is not your password." in client.post(
        reverse("two-factor"), {"action": "recovery", "password": "nope"}).content.decode()
    renewed = client.post(reverse("two-factor"), {"action": "recovery", "password": PASSWORD}).content.decode()
    new_codes = re.findall(r"<code>([0-9a-f]{5}-[0-9a-f]{5})</code>", renewed)
    assert len(new_codes) == 10 and not set(new_codes) & set(codes)
    client.logout()
    password_step(client, alice)
    assert client.post(reverse("login-code"), {"code": codes[1]}).status_code == 400  # the old ones stopped working
    assert client.post(reverse("login-code"), {"code": new_codes[1]}).status_code == 302


def test_turning_it_off_takes_the_password(client, alice):
    turn_on(client, alice)
    client.force_login(alice)
    assert client.post(reverse("two-factor"), {"action": "disable", "password": "nope"}).status_code == 400
    assert TwoFactor.objects.filter(user=alice).exists()
    assert client.post(reverse("two-factor"), {"action": "disable", "password": PASSWORD}).status_code == 302
    client.logout()
    response = client.post(reverse("login"), {"username": alice.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] != reverse("login-code")


def test_turning_it_on_takes_the_password(client, alice):
    """A session alone (a stolen cookie) must not turn it on with the thief's authenticator: the
    owner would be locked out, and the recovery codes shown to the thief."""
    client.force_login(alice)
    client.get(reverse("two-factor"))
    code = pyotp.TOTP(client.session["two-factor-setup-secret"]).now()
    for password in ({}, {"password": "nope"}):
        refused = client.post(reverse("two-factor"), {"action": "enable", "code": code, **password})
        assert refused.status_code == 400 and "That is not your password." in refused.content.decode()
        assert not TwoFactor.objects.filter(user=alice).exists()
    assert 'name="password"' in refused.content.decode()  # the page asks for it
    done = client.post(reverse("two-factor"), {"action": "enable", "code": code, "password": PASSWORD})
    assert done.status_code == 200 and TwoFactor.objects.filter(user=alice).exists()


@pytest.mark.parametrize("enabled", [False, True])
def test_wrong_passwords_on_the_page_are_limited_like_sign_ins(client, alice, settings, enabled):
    """The page is no password oracle for a stolen session: its wrong passwords are failed sign-ins."""
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    if enabled:
        from bots import twofactor

        twofactor.enable(alice, pyotp.random_base32())
    client.force_login(alice)
    action = "disable" if enabled else "enable"
    for n in range(3):
        assert client.post(reverse("two-factor"), {"action": action, "password": f"guess-{n}"}).status_code == 400
    limited = client.post(reverse("two-factor"), {"action": action, "password": PASSWORD})
    assert limited.status_code == 429 and "Too many password attempts" in limited.content.decode()
    assert TwoFactor.objects.filter(user=alice).exists() == enabled  # even the right one changes nothing
    client.logout()
    response = client.post(reverse("login"), {"username": alice.username, "password": PASSWORD})
    assert response.status_code == 429  # the same account's limit


def test_the_secret_is_encrypted_at_rest_and_accounts_without_it_sign_in_as_before(client, alice, bob):
    secret, _ = turn_on(client, alice)
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM bots_twofactor WHERE user_id = %s", [alice.id])
        stored = cursor.fetchone()[0]
    assert secret not in stored and TwoFactor.objects.get(user=alice).secrets["totp"] == secret
    response = client.post(reverse("login"), {"username": bob.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == reverse("home")  # then the inbox: bob is an agent


def test_wrong_codes_are_limited_like_wrong_passwords(client, alice, settings):
    settings.CHATNEXUS_LOGIN_FAILURES_PER_ACCOUNT = 3
    secret, _ = turn_on(client, alice)
    password_step(client, alice)
    for _ in range(3):
        assert client.post(reverse("login-code"), {"code": "000000"}).status_code == 400
    limited = client.post(reverse("login-code"), {"code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert limited.status_code == 429  # even the right code, until the window slides
    assert client.get(reverse("bots:list")).status_code == 302


def test_the_code_step_expires_and_needs_the_password_step(client, alice, settings):
    from bots.views import two_factor

    assert client.get(reverse("login-code")).status_code == 302  # nothing pending: back to the password
    turn_on(client, alice)
    password_step(client, alice)
    session = client.session
    session[two_factor.PENDING_KEY] = {**session[two_factor.PENDING_KEY], "at": time.time() - two_factor.PENDING_S - 1}
    session.save()
    response = client.post(reverse("login-code"), {"code": "000000"})
    assert response.status_code == 302 and response["Location"] == reverse("login")


def test_the_admin_signs_in_through_the_same_two_steps(client, alice):
    secret, _ = turn_on(client, alice)
    alice.is_staff = alice.is_superuser = True
    alice.save()
    response = client.post("/admin/login/?next=/admin/", {"username": alice.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert client.get("/admin/").status_code == 302  # not signed in by the admin's own form
    password_step(client, alice, next_url="/admin/")
    response = client.post(reverse("login-code"), {"code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert response["Location"] == "/admin/" and client.get("/admin/").status_code == 200


def test_a_code_in_other_scripts_digits_is_a_wrong_code_not_a_500(client, alice):
    turn_on(client, alice)
    password_step(client, alice)
    assert client.post(reverse("login-code"), {"code": "١٢٣٤٥٦"}).status_code == 400  # Arabic-Indic digits


def test_a_rotated_key_still_reads_old_secrets_and_reencrypt_moves_them_over(client, alice, settings):
    """SECRET_KEY rotated (or CHATNEXUS_ENCRYPTION_KEY set for the first time): with the old key listed,
    second factors still work; after reencrypt_secrets the old key can go. Unlisted: a clear page."""
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    secret, _ = turn_on(client, alice)
    old_secret_key = settings.SECRET_KEY
    settings.ENCRYPTION_KEY = Fernet.generate_key().decode()  # now set, for the first time
    password_step(client, alice)
    page = client.post(reverse("login-code"), {"code": "000000"})
    assert page.status_code == 400  # read (under SECRET_KEY, still listed once the new key is set), and wrong

    settings.SECRET_KEY = "a-new-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # and SECRET_KEY rotated too
    password_step(client, alice)
    lost = client.post(reverse("login-code"), {"code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert lost.status_code == 503 and "encryption key changed" in lost.content.decode()  # not a 500

    settings.SECRET_KEY_FALLBACKS = [old_secret_key]  # the old key listed again
    call_command("reencrypt_secrets")
    settings.SECRET_KEY_FALLBACKS = []  # ... and removed once re-encrypted
    password_step(client, alice)
    ok = client.post(reverse("login-code"), {"code": pyotp.TOTP(secret).at(time.time() + 30)})
    assert ok.status_code == 302


def test_reencrypt_can_forget_what_no_key_reads(alice, settings, capsys):
    from django.core.management import CommandError, call_command

    from bots import twofactor
    from channels_app.models import ChannelConfig

    twofactor.enable(alice, pyotp.random_base32())
    config = ChannelConfig.objects.create(organization=alice.memberships.first().organization,
                                          bot=__import__("bots.models", fromlist=["Bot"]).Bot.objects.create(
                                              organization=alice.memberships.first().organization, name="B"),
                                          kind="whatsapp", secrets={"auth_token": "t"})
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # the old one lost
    with pytest.raises(CommandError, match="could not be read"):  # a non-zero exit: the old key must stay
        call_command("reencrypt_secrets")
    assert "does not decrypt" in capsys.readouterr().err and TwoFactor.objects.filter(user=alice).exists()
    call_command("reencrypt_secrets", "--forget-unreadable")
    assert not TwoFactor.objects.filter(user=alice).exists()
    assert ChannelConfig.objects.get(id=config.id).secrets == {}


def test_a_second_factor_no_key_reads_is_still_turned_off_by_its_user(client, alice, settings):
    """The key changed and the old one is not listed: the two-factor page reads no secret, so it
    still opens, makes new recovery codes and turns the second factor off (it was a 500)."""
    from bots import twofactor

    twofactor.enable(alice, pyotp.random_base32())
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # the old one lost
    client.force_login(alice)
    page = client.get(reverse("two-factor"))
    assert page.status_code == 200 and "10 unused recovery codes left" in page.content.decode()
    renewed = client.post(reverse("two-factor"), {"action": "recovery", "password": PASSWORD})
    codes = re.findall(r"<code>[0-9a-f]{5}-[0-9a-f]{5}</code>", renewed.content.decode())
    assert renewed.status_code == 200 and len(codes) == 10
    assert client.post(reverse("two-factor"), {"action": "disable", "password": PASSWORD}).status_code == 302
    assert not TwoFactor.objects.filter(user=alice).exists()


def test_staff_delete_a_second_factor_no_key_reads_in_the_admin(client, alice, settings, django_user_model):
    """The README's way back in for someone locked out (staff delete their second factor in /admin/)
    works when the key changed too: the admin's list and delete pages read no secret (they were a 500)."""
    from bots import twofactor

    twofactor.enable(alice, pyotp.random_base32())
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # the old one lost
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD))
    listed = client.get(reverse("admin:bots_twofactor_changelist"))
    assert listed.status_code == 200 and alice.username in listed.content.decode()
    second_factor = TwoFactor.objects.only("id").get(user=alice)
    url = reverse("admin:bots_twofactor_delete", args=[second_factor.id])
    assert client.get(url).status_code == 200
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not TwoFactor.objects.filter(user=alice).exists()
    client.logout()
    response = client.post(reverse("login"), {"username": alice.username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] != reverse("login-code")  # the password alone again
