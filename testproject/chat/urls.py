from django.urls import path

from testproject.chat import views

urlpatterns = [
    path("", views.lobby, name="lobby"),
    path("rooms/<slug:slug>/", views.room, name="room"),
    path("rooms/<slug:slug>/notify/", views.notify, name="notify"),
]
