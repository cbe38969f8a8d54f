"""docker-compose.yml hands every variable of the README's Configuration table to the app
containers (what the operator sets in the shell or `.env` reaches the settings), and with
nothing set the containers run on the table's defaults: compose's "" for a variable left out
reads as its default, never as a value the settings refuse or take literally.

Docker does not run here: the file is read as compose reads it (YAML with its anchors and
merges, then `${VAR:-default}` interpolation) and the settings are loaded in a fresh process
with the environment one container would get."""
import json
import re

import pytest
import yaml

from .test_settings_env import EVERY_SETTING, ROOT, documented_variables, run_in

# Documented variables compose sets itself rather than passing through, and why.
FIXED = {
    "DATABASE_URL": "the compose file's own postgres service (its password from POSTGRES_PASSWORD)",
    "REDIS_URL": "the compose file's own redis service",
}
# ... set only where they apply
ONLY_IN = {
    "CHATNEXUS_PRELOAD_MODEL": ({"inference-worker"}, "the one worker that generates replies loads its model at start"),
}
# ... left to the image (Dockerfile ENV): paths of the volumes the services mount
IMAGE = {
    "CHATNEXUS_VAR_DIR": "/var/lib/chatnexus, where the `var` volume is mounted (beat's schedule is kept there too)",
    "CHATNEXUS_MODEL_CACHE": "/models/chatnexus, on the `models` volume (the inference worker names it again)",
}
# Compose's own defaults, which differ from the table's on purpose (the table says so).
COMPOSE_DEFAULTS = {"PUBLIC_URL", "FORWARDED_ALLOW_IPS", "CHATNEXUS_DEVICE", "CHATNEXUS_MODEL_CACHE", "HF_HOME"}

VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # anchors and `<<` merges resolved


def app_services():
    """The services that run the app's image (the others are postgres and redis)."""
    return {name: service for name, service in compose()["services"].items() if "build" in service}


def interpolate(value, shell):
    """``value`` as compose writes it into a container, ``shell`` being the shell and .env."""
    def one(match):
        name, operator, argument = match.groups()
        if operator is None:
            return shell.get(name, "")
        present = name in shell and (shell[name] != "" or not operator.startswith(":"))  # ":": empty is unset
        if operator.endswith("?"):
            if not present:
                raise ValueError(f"{name}: {argument}")
            return shell[name]
        return shell[name] if present else argument
    return VARIABLE.sub(one, str(value))


def container_environment(service, shell):
    return {name: interpolate(value, shell) for name, value in app_services()[service]["environment"].items()}


def test_the_app_services_are_found():
    assert set(app_services()) == {"migrate", "web", "worker", "beat", "inference-worker"}
    assert len(documented_variables()) > 60  # the README's table was read


def test_every_documented_variable_reaches_every_app_container():
    """Each one interpolated from the variable of that name: set in .env or the shell, it arrives."""
    passed = set(documented_variables()) - set(FIXED) - set(ONLY_IN) - set(IMAGE)
    missing = {}
    for service_name, service in app_services().items():
        environment = service["environment"]
        missing[service_name] = sorted(name for name in passed
                                       if not re.search(rf"\$\{{{name}[:?}}-]", str(environment.get(name, ""))))
    assert missing == dict.fromkeys(app_services(), [])
    shell = {"SECRET_KEY": "k" * 50, "SECRET_KEY_FALLBACKS": "old-key", "API_RATE": "5/s", "LOG_LEVEL": "debug"}
    for service_name in app_services():
        got = container_environment(service_name, shell)
        assert (got["SECRET_KEY_FALLBACKS"], got["API_RATE"], got["LOG_LEVEL"]) == ("old-key", "5/s", "debug")


def test_the_variables_compose_sets_itself():
    for service_name, service in app_services().items():
        environment = service["environment"]
        assert {name: name in environment for name in FIXED} == dict.fromkeys(FIXED, True), service_name
        for name, (services, _why) in ONLY_IN.items():
            assert (name in environment) is (service_name in services), (service_name, name)
    assert app_services()["inference-worker"]["environment"]["CHATNEXUS_PRELOAD_MODEL"] == "1"
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name, why in IMAGE.items():
        path = why.split(",")[0]
        assert f"{name}={path}" in dockerfile, name
        for service_name, service in app_services().items():
            assert service["environment"].get(name, path) == path, (service_name, name)  # not emptied by compose


@pytest.mark.parametrize("service", ["web", "inference-worker"])
def test_with_nothing_set_a_container_runs_on_the_documented_defaults(tmp_path, service):
    """Only SECRET_KEY set (compose requires it): every setting of the container equals a process
    with nothing set but what compose fixes and its own documented defaults."""
    environment = container_environment(service, {"SECRET_KEY": "k" * 50})
    own = {name: value for name, value in environment.items() if name in {*FIXED, *ONLY_IN, *COMPOSE_DEFAULTS}}
    own["SECRET_KEY"] = environment["SECRET_KEY"]
    as_compose, as_documented = (run_in(tmp_path, EVERY_SETTING, **env) for env in (environment, own))
    assert as_compose.returncode == 0, as_compose.stderr
    assert as_documented.returncode == 0, as_documented.stderr
    as_compose, as_documented = (json.loads(done.stdout.strip().splitlines()[-1]) for done in (as_compose, as_documented))
    assert {name: (as_documented[name], as_compose.get(name)) for name in as_documented
            if as_compose.get(name) != as_documented[name]} == {}
