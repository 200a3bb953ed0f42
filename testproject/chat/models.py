"""Rooms: what the lobby lists; staff add more in the admin."""

from __future__ import annotations

from django.db import models


class Room(models.Model):
    slug = models.SlugField(unique=True, help_text="Used in the room's URL.")
    title = models.CharField(max_length=100)
    description = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.title

    @property
    def group(self) -> str:
        """Channel-layer group of the room's WebSocket connections."""
        return room_group(self.slug)


def room_group(slug: str) -> str:
    """Group name of the room ``slug`` (a valid Channels name: slugs are)."""
    return f"room.{slug}"
