"""The hourly retention job on a fresh install and with odd settings: no customer's file stored yet
(its folder not made), a stage that fails as a whole, an activity retention longer than dates go
back. Each stage runs whatever another did: a failing one is logged and the job ends failed, naming
it, after the others ran (the sweep's crash skipped the activity log's retention for good)."""
from datetime import timedelta

import pytest
from django.utils import timezone

from bots import audit
from bots.models import AuditEvent
from bots.tasks import purge_expired_conversations

pytestmark = pytest.mark.django_db


def attachments_at(settings, location):
    settings.STORAGES = {**settings.STORAGES,
                         "attachments": {**settings.STORAGES["attachments"], "OPTIONS": {"location": str(location)}}}


def old_entry(organization, user, days):
    event = audit.record(organization, user, "bot.created", "Created the bot Old")
    AuditEvent.objects.filter(id=event.id).update(created=timezone.now() - timedelta(days=days))
    return event


def test_it_runs_before_any_customers_file_was_stored(settings, tmp_path, acme, alice):
    attachments_at(settings, tmp_path / "attachments")  # made with the first file: not yet
    event = old_entry(acme, alice, days=400)
    result = purge_expired_conversations.apply()
    assert result.successful(), result.traceback
    assert not AuditEvent.objects.filter(id=event.id).exists()
    assert not (tmp_path / "attachments").exists()


def test_a_stage_that_fails_skips_no_other_and_the_job_ends_failed_naming_it(settings, tmp_path, acme, alice,
                                                                             caplog):
    (tmp_path / "attachments").write_text("a file where the folder should be")  # listing it fails
    attachments_at(settings, tmp_path / "attachments")
    event = old_entry(acme, alice, days=400)
    result = purge_expired_conversations.apply()
    assert result.failed() and "deleting old files failed" in str(result.result)
    assert "retention: deleting old files failed; the other stages still run" in caplog.text
    assert not AuditEvent.objects.filter(id=event.id).exists()  # the next stage still ran


@pytest.mark.parametrize("days", [999_999, 10**10])
def test_an_activity_retention_longer_than_dates_go_back_keeps_everything(settings, acme, alice, days):
    settings.CHATNEXUS_ACTIVITY_RETENTION_DAYS = days
    event = old_entry(acme, alice, days=400)
    result = purge_expired_conversations.apply()
    assert result.successful(), result.traceback
    assert AuditEvent.objects.filter(id=event.id).exists()
