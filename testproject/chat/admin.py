from django.contrib import admin

from testproject.chat.models import Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "description"]
    prepopulated_fields = {"slug": ["title"]}
