"""An unmanaged placeholder model: it puts "Presence" in the admin index.

There is no table; the model exists for its admin page and its permission
(``nats_presence.view_roster``), as django-rq and django-constance do for
data that does not live in the database.
"""

from __future__ import annotations

from django.db import models


class Roster(models.Model):  # type: ignore[misc]
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("view_roster", "Can view the presence roster")]
        verbose_name = "roster"
        verbose_name_plural = "roster"

    def __str__(self) -> str:
        return "presence roster"
