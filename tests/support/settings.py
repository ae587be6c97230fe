"""Settings of the test process itself (pytest-django): the project's, with the test servers' key and plain http.

The project refuses to start without SECRET_KEY outside DEBUG, and pytest-django
imports the settings before any conftest runs, so the defaults are set here.
"""

import os

from tests.support.server import TEST_ENV

for name in ("SECRET_KEY", "HTTPS", "CHAT_RESUME_INTERRUPTED_MAX_AGE_S"):
    os.environ.setdefault(name, TEST_ENV[name])

from project.settings import *  # noqa: E402, F403
