"""The agencies' inboxes: every channel that takes a citizen's message files it here."""
