"""Email: ``views`` (raw-MIME inbound webhook) and ``imap`` (polling task) are the inbound
face, both feeding ``inbound.ingest``; ``parse`` reads real-world mail, ``filters`` decides
what is never answered; ``adapter`` is the send face (SMTP, threaded replies)."""
