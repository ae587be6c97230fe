"""Mounted at ds/v1/stream/: generations under generations/, every other path a stream of the general namespace."""

from django.urls import path, re_path

from durable.views.generations import generation_view
from durable.views.streams import stream_view

app_name = "durable"

urlpatterns = [
    path("generations/<uuid:generation_id>", generation_view, name="generation"),
    re_path(r"^(?P<path>.+)$", stream_view, name="stream"),
]
