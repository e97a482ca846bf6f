"""The citizen directory: a national ID → the citizen's mobile number (and email)."""
