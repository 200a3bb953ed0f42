"""The admin page "Presence > Roster": live nodes, rooms and members.

The page is the placeholder model's changelist
(``admin:nats_presence_roster_changelist``); it polls
``admin:nats_presence_roster_data`` every 2 s. Both need a staff user with
``nats_presence.view_roster`` (superusers have it): anonymous users go to the
admin login, other staff get 403.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from .models import Roster
from .views import roster_data

REFRESH_MS = 2000


@admin.register(Roster)
class RosterAdmin(admin.ModelAdmin):  # type: ignore[misc]
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        view = self.admin_site.admin_view
        return [
            path("", view(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("data/", view(self.data_view), name="{}_{}_data".format(*info)),
        ]

    @method_decorator(never_cache)  # type: ignore[untyped-decorator]
    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        status, data = roster_data(request)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Presence",
            "subtitle": None,
            "data": data,
            "status": status,
            "data_url": reverse("admin:nats_presence_roster_data"),
            "refresh_ms": REFRESH_MS,
            **(extra_context or {}),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/nats_presence/roster.html", context)

    @method_decorator(never_cache)  # type: ignore[untyped-decorator]
    def data_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            return JsonResponse({"error": "permission denied"}, status=403)
        status, data = roster_data(request)
        return JsonResponse(data, status=status)
