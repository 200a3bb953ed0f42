"""WebSocket URLs."""

from django.urls import path

from testproject.chat import consumers

websocket_urlpatterns = [
    path("ws/lobby/", consumers.LobbyConsumer.as_asgi()),
    path("ws/rooms/<slug:slug>/", consumers.RoomConsumer.as_asgi()),
]
