"""An API token acts for the organisation its page names (the oldest membership, or the one
``X-Organization`` names), also when the browser sends its user's own session cookie with it: the
organisation picked in the web app's switcher is the session's, not the token's."""
from django.urls import reverse

from bots.models import ApiToken, Bot, Membership


def test_a_token_sent_with_its_users_session_cookie_acts_for_the_oldest_membership(client, alice, acme, globex,
                                                                                     acme_bot, globex_bot):
    """Alice (Acme's owner since first, Globex's owner since later) works in Globex in the browser and
    runs a script with her token from it: the token's requests are Acme's, as its page says."""
    Membership.objects.create(user=alice, organization=globex, role="owner")
    key = ApiToken.issue(alice)
    client.force_login(alice)
    client.post(reverse("switch-organization"), {"organization": globex.id})
    assert client.get(reverse("api-token")).context["acts_for"].organization == acme
    token = {"HTTP_AUTHORIZATION": f"Token {key}"}

    made = client.post("/api/bots/", {"name": "Made by a script"}, content_type="application/json", **token)
    assert made.status_code == 201, made.content
    assert Bot.objects.get(name="Made by a script").organization == acme
    listed = [b["name"] for b in client.get("/api/bots/", **token).json()["results"]]
    assert sorted(listed) == sorted([acme_bot.name, "Made by a script"])

    picked = client.get("/api/bots/", HTTP_X_ORGANIZATION="globex", **token).json()["results"]
    assert [b["name"] for b in picked] == [globex_bot.name]  # the header still picks
    by_session = client.get("/api/bots/").json()["results"]  # the session alone: the switcher's choice
    assert [b["name"] for b in by_session] == [globex_bot.name]
