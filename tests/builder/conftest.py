"""Builder test helpers: signed-in test clients for the named users."""
import pytest


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)  # Acme owner: manages Acme's bots
    return client


@pytest.fixture
def as_bob(client, bob):
    client.force_login(bob)  # Acme agent: inbox only, no builder
    return client


@pytest.fixture
def as_charlie(client, charlie):
    client.force_login(charlie)  # Globex owner: nothing of Acme
    return client
