"""Screen readers read a field's help text and errors through its aria-describedby (Django sets
``id_<field>_helptext`` / ``id_<field>_error`` on the widget): every id a builder page points at
must be on that page, once."""
from collections import Counter
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from .test_bot_pages import settings_data

pytestmark = pytest.mark.django_db


class Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.described_by = Counter(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids[attrs["id"]] += 1
        if attrs.get("aria-describedby"):
            self.described_by += [(attrs.get("name"), ref) for ref in attrs["aria-describedby"].split()]


def described(html):
    parser = Ids()
    parser.feed(html)
    return parser


def assert_descriptions_found(response):
    page = described(response.content.decode())
    assert page.described_by  # the builder's fields have help text
    missing = [(name, ref) for name, ref in page.described_by if page.ids[ref] != 1]
    assert missing == []
    # a label's for= and a script's getElementById find the first of two equal ids
    assert [id_ for id_, count in page.ids.items() if count > 1] == []


def test_every_field_description_of_the_builder_is_on_the_page(as_alice, acme_bot):
    response = as_alice.get(reverse("bots:builder", args=[acme_bot.id]))
    assert response.status_code == 200
    assert_descriptions_found(response)
    # the help text itself is what the field points at
    page = response.content.decode()
    assert 'id="id_temperature_helptext">0 = always the most likely token' in page


def test_a_settings_form_sent_back_with_errors_points_at_its_help_and_errors(as_alice, acme_bot):
    response = as_alice.post(reverse("bots:builder", args=[acme_bot.id]),
                             settings_data(acme_bot, temperature="9", avatar_color="blue"))
    assert response.status_code == 400
    assert_descriptions_found(response)
    refs = {ref for _, ref in described(response.content.decode()).described_by}
    assert {"id_temperature_helptext", "id_temperature_error", "id_avatar_color_error"} <= refs


def test_the_knowledge_forms_sent_back_with_errors_point_at_their_help(as_alice, acme_bot):
    response = as_alice.post(reverse("bots:document_add", args=[acme_bot.id]), {"title": "Empty", "text": ""})
    assert response.status_code == 400
    assert_descriptions_found(response)
