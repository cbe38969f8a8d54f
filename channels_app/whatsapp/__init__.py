"""WhatsApp through Twilio: ``views`` (inbound webhook + status callback, the inbound
face), ``adapter`` (the send face: Twilio's Messages API), ``split`` (1,600-char parts)."""
