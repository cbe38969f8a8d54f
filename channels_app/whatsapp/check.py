""""Check the Twilio settings" on the Channels page: ask Twilio for the channel's account with
the saved Account SID and Auth Token (``GET /2010-04-01/Accounts/{AccountSid}.json``, what the
replies authenticate with) and say in words whether Twilio accepts them and the account can send.
No message is sent (a test WhatsApp needs a customer who wrote first); nothing is stored.
"""
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from ..base import DeliveryError, one_line
from .adapter import twilio_client


def check(config) -> list[tuple[bool, str]]:
    try:
        client = twilio_client(config)
    except DeliveryError:
        return [(False, "Twilio not tried: save the Account SID and Auth Token first.")]
    sid = config.settings.get("account_sid", "")
    try:
        account = client.api.v2010.accounts(sid).fetch()
    except TwilioRestException as error:
        if error.status == 401:
            return [(False, f"Twilio refused the Account SID {sid} with this Auth Token (error {error.code}): "
                            "copy both again from the Twilio console.")]
        if error.status == 404:
            return [(False, f"Twilio knows no account {sid} (error {error.code}).")]
        return [(False, f"Twilio answered {error.status} (error {error.code}): {one_line(error.msg)}.")]
    except (requests.RequestException, TwilioException, OSError) as error:
        return [(False, f"Could not reach Twilio: {one_line(error)}.")]
    name = account.friendly_name or sid
    if account.status != "active":
        return [(False, f"Twilio accepted the Account SID and Auth Token, but the account {name!r} is {account.status}: "
                        "it cannot send.")]
    return [(True, f"Twilio accepted the Account SID and Auth Token: the account {name!r} is active.")]
