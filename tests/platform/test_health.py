"""The probes: /healthz answers while the process lives, /readyz only while the database
and the cache (real PostgreSQL and Redis here) answer; both public, neither leaks why."""
import pytest


@pytest.mark.django_db
def test_both_probes_answer_when_everything_is_up(client):
    assert client.get("/healthz").content == b"ok\n"
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "cache": "ok"}
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_fails_when_the_cache_is_unreachable_and_says_only_which(client, settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0"}}  # nothing listens on port 1
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "failing", "database": "ok", "cache": "failing"}
    assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_readyz_fails_when_the_database_is_unreachable(transactional_db, client):
    from django.db import connections

    assert client.get("/readyz").json()["database"] == "ok"  # the control: this database answers
    connection = connections["default"]
    port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "1"  # nothing listens there
    try:
        response = client.get("/readyz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = port
    assert response.status_code == 503 and response.json()["database"] == "failing"
    assert response.json()["cache"] == "ok"


@pytest.mark.django_db
def test_probes_answer_an_internal_host_over_http_in_production_settings(client, settings):
    settings.ALLOWED_HOSTS = ["chat.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/", HTTP_HOST="10.0.0.5:8000").status_code == 400  # the control: pages refuse that host
    for probe in ("/healthz", "/readyz"):
        assert client.get(probe, HTTP_HOST="10.0.0.5:8000").status_code == 200, probe
    assert client.post("/readyz", HTTP_HOST="10.0.0.5:8000").status_code == 405
