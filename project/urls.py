from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from chat import pages
from chat.transports import live
from project.api import api, not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    # The per-user live channel (django-eventstream); a plain async view, not a ninja operation.
    path("api/events/", live.events_view, name="events"),
    path("api/", api.urls),
    re_path(r"^api/", not_found),
    path("ds/v1/stream/", include("durable.urls")),
    path("", pages.chat_page, name="chat"),
    re_path(rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.+)$", pages.static_file),
]
