"""Error pages are the product's own (with DEBUG off, as deployed): a lost admin gets a way
back, a stale form a reason and what to do, a crash no traceback; and the site has an icon
(browsers asked for /favicon.ico on every page and got 404s)."""
import pytest
from django.test import Client


@pytest.mark.django_db
def test_an_unknown_address_gets_the_products_page_not_found(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and 'href="/"' in body and "topbar" in body


@pytest.mark.django_db
def test_a_form_without_its_csrf_token_gets_a_page_saying_what_to_do(django_user_model):
    browser = Client(enforce_csrf_checks=True)
    user = django_user_model.objects.create_user("stale", password="pw-long-enough-1")
    browser.force_login(user)
    response = browser.post("/accounts/logout/")
    assert response.status_code == 403
    body = response.content.decode()
    assert "Please try again" in body and "reload the page" in body


@pytest.mark.django_db
def test_a_crash_gets_a_plain_page_without_a_traceback(settings):
    from django.urls import path

    def boom(request):
        raise RuntimeError("secret detail of the crash")

    settings.ROOT_URLCONF = type("urls", (), {"urlpatterns": [path("boom/", boom)]})
    browser = Client(raise_request_exception=False)
    response = browser.get("/boom/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong" in body and "secret detail" not in body and "Traceback" not in body


@pytest.mark.django_db
def test_pages_name_an_icon_and_favicon_ico_leads_to_it(client):
    from django.contrib.staticfiles import finders

    login = client.get("/accounts/login/").content.decode()
    assert 'rel="icon"' in login and "chatnexus/favicon.svg" in login
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("chatnexus/favicon.svg")
    assert finders.find("chatnexus/favicon.svg")  # the file it points at ships
