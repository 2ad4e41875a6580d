"""Agent-assist components."""
