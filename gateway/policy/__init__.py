"""Who may send what, how much and how fast: auth, sender policy, limits, audit."""
