from django.conf import settings
from django.contrib import admin
from django.urls import include, path, re_path

from chat import pages
from chat.api import api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", api.urls),
    path("", pages.chat_page, name="chat"),
    re_path(rf"^{settings.STATIC_URL.strip('/')}/(?P<path>.+)$", pages.static_file),
]
