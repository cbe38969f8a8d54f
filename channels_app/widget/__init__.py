"""The website widget channel.

Inbound: ``consumer.WidgetConsumer`` (websocket ``/ws/widget/<public_key>/``) checks the
page's origin against the bot's allow-list, rate-limits, identifies the visitor by a
signed token and hands each message to ``bots.services.receive()``. ``views.public_config``
serves the bot's public look (name, colour, greeting) to the embed script
``static/chatnexus/widget.js``. Send: ``adapter.WidgetAdapter`` pushes a stored reply to
the conversation's live group (the reply itself already streamed token by token).
"""
