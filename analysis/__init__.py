"""Post-mortem analysis of the event log in pandas."""
