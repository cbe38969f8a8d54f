"""Channels: one module per channel, each with two faces — inbound (the outside
world's request becomes ``bots.services.receive()``) and send (deliver a stored
reply). ``registry.ADAPTERS`` maps a channel name to its adapter."""
