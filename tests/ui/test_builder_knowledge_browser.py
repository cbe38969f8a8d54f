"""The builder in Chromium: import FAQ pairs from a CSV file, then bring back the published
version from the Versions tab (the knowledge and the Versions tab switch without a reload)."""
import pytest
from playwright.sync_api import expect

from .conftest import log_in

pytestmark = pytest.mark.browser


def test_import_a_faq_sheet_then_restore_the_published_version(transactional_db, live_server_url, page, alice,
                                                                acme_bot, tmp_path):
    sheet = tmp_path / "faq.csv"
    sheet.write_text("Question;Answer\nDo you rent bikes?;Yes, from 15 € a day.\nCan I return a bike?;Within 30 days.\n",
                     encoding="utf-8-sig")
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/bots/{acme_bot.id}/#knowledge")
    page.set_input_files("#id_import-file", str(sheet))
    page.click("#import-faq")
    expect(page.locator(".flash, .messages").first).to_contain_text("FAQ pairs imported into the draft: 2 added, 0 updated.")
    expect(page.locator("#faq-list")).to_contain_text("Do you rent bikes?")
    expect(page.locator("#unpublished-badge")).to_be_visible()

    page.click("a[data-tab=versions]")
    expect(page.locator("#draft-changes")).to_contain_text("Knowledge: 2 added")
    page.once("dialog", lambda dialog: dialog.accept())  # "Replace the draft with version 1?"
    page.locator("#version-list tr[data-version='1']").get_by_role("button", name="Restore into the draft").click()
    expect(page.locator(".flash, .messages").first).to_contain_text("Version 1 is back in the draft.")
    expect(page.locator("#unpublished-badge")).to_have_count(0)
    page.click("a[data-tab=knowledge]")
    expect(page.locator("#faq-list")).not_to_contain_text("Do you rent bikes?")
    expect(page.locator("#faq-list")).to_contain_text("What are your opening hours?")
