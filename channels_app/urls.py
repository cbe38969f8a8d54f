"""Inbound webhooks of the channels (each channel module adds its routes here)."""
from django.urls import path

from . import views as channel_views
from .widget import views as widget_views
from .whatsapp import views as whatsapp_views
from .email import views as email_views

app_name = "channels"

urlpatterns = [
    # Per-bot "Channels" page (managers): widget, WhatsApp, email settings and setup steps.
    path("bots/<int:bot_id>/", channel_views.bot_channels, name="bot"),
    path("bots/<int:bot_id>/widget-try/", channel_views.widget_try, name="widget-try"),
    # "Send a test email" / "Check the Twilio settings" / "Send a test event": the saved settings tried for real
    *[path(f"bots/<int:bot_id>/check/{kind}/", channel_views.channel_check, {"kind": kind}, name=f"check-{kind}")
      for kind in channel_views.CHECKS],
    # Email: "Send the confirmation email again" (managers), and the link it mails to the bot's address (anyone holding it).
    path("bots/<int:bot_id>/email-confirmation/", channel_views.email_confirmation, name="email-confirmation"),
    path("email/confirm/<str:token>/", email_views.confirm, name="email-confirm"),
    # Website widget: the bot's public look for the embed script (CORS per allow-list).
    path("widget/<str:public_key>/config/", widget_views.public_config, name="widget-config"),
    # Website widget: a visitor's file (visitor token + allow-listed origin, no cookies).
    path("widget/<str:public_key>/upload/", widget_views.upload, name="widget-upload"),
    # WhatsApp (Twilio): incoming messages and delivery status callbacks, signed by Twilio.
    path("whatsapp/<str:key>/", whatsapp_views.incoming, name="whatsapp-inbound"),
    path("whatsapp/<str:key>/status/", whatsapp_views.status, name="whatsapp-status"),
    # A customer's WhatsApp attachment for the inbox (members, own organisation), fetched from Twilio.
    path("whatsapp/media/<int:message_id>/<int:index>/", whatsapp_views.media_view, name="whatsapp-media"),
    path("whatsapp/conversations/<int:conversation_id>/reengage/", whatsapp_views.reengage, name="whatsapp-reengage"),
    # Email: inbound webhook (raw MIME as SendGrid/Mailgun post it, or Postmark's JSON), per-channel secret.
    path("email/<str:key>/inbound/", email_views.inbound, name="email-inbound"),
]
