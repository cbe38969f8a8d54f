"""Staff delete a user in /admin/ whose second factor no listed key decrypts (the key was rotated
away): the confirmation page lists it without reading its secret, and the user goes with it."""
import pyotp
import pytest
from django.urls import reverse

from bots import twofactor
from bots.models import TwoFactor
from tests.conftest import make_member

pytestmark = pytest.mark.django_db
PASSWORD = "correct-horse-battery"  # make_member's


def test_staff_delete_a_user_whose_second_factor_no_key_reads(client, acme, settings, django_user_model):
    dora = make_member(acme, "dora", "agent")
    twofactor.enable(dora, pyotp.random_base32())
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"  # the old one lost
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD))
    url = reverse("admin:auth_user_delete", args=[dora.id])
    page = client.get(url)
    assert page.status_code == 200 and "Two factor" in page.content.decode()  # listed among what goes
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not django_user_model.objects.filter(id=dora.id).exists()
    assert not TwoFactor.objects.filter(user_id=dora.id).exists()


def test_the_admin_bulk_delete_takes_such_a_user_too(client, acme, settings, django_user_model):
    dora = make_member(acme, "dora", "agent")
    twofactor.enable(dora, pyotp.random_base32())
    settings.SECRET_KEY = "another-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD))
    changelist = reverse("admin:auth_user_changelist")
    chosen = {"action": "delete_selected", "_selected_action": [dora.id]}
    assert client.post(changelist, chosen).status_code == 200  # "are you sure?"
    assert client.post(changelist, {**chosen, "post": "yes"}).status_code == 302
    assert not django_user_model.objects.filter(id=dora.id).exists()
