"""Presence over NATS: who is connected to which room, cluster-wide."""
