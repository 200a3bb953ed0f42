"""The demo's chat app: rooms, the room consumer, the sync notification view."""
