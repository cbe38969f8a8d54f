"""Tenants, bots, conversations and messages: the product's data and its only writer."""
