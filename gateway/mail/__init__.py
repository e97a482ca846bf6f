"""The email channel: a message whose SMS failed or expired, sent by email."""
