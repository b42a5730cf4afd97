"""Who may do what: API keys, device tokens, signing keys, revocations."""
