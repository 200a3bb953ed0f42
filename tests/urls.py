"""URLs of the test settings: the admin (for the presence admin page tests)."""

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
