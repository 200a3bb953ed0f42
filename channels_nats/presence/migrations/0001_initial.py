"""The unmanaged placeholder model: no table, only its permission."""

from __future__ import annotations

from typing import Any

from django.db import migrations, models


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True

    dependencies: list[Any] = []

    operations = [
        migrations.CreateModel(
            name="Roster",
            fields=[
                (
                    "id",
                    models.AutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
            ],
            options={
                "verbose_name": "roster",
                "verbose_name_plural": "roster",
                "permissions": [("view_roster", "Can view the presence roster")],
                "managed": False,
                "default_permissions": (),
            },
        ),
    ]
