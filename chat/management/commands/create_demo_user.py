from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create (or reset) the local demo user and say how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="where the server listens (make run passes it)")

    def handle(self, *args, username, password, url, **options):
        user, created = get_user_model().objects.get_or_create(username=username)
        user.set_password(password)
        # Staff, so the same login opens the admin's view of interrupted streams.
        user.is_staff = user.is_superuser = True
        user.save()
        verb = "Created" if created else "Reset"
        self.stdout.write(
            f"{verb} demo user. Open {url} and log in as {username!r} with password {password!r}."
        )
