"""`manage.py demo`: migrate, create alice and bob (password `demo`) with a post each, serve."""

from typing import Any

from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand

from blog.models import Post


class Command(BaseCommand):
    help = "Set up the example's data and serve it on 127.0.0.1:8002"

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", verbosity=0)
        for name in ("alice", "bob"):
            if not User.objects.filter(username=name).exists():
                user = User.objects.create_user(name, password="demo")
                Post.objects.create(author=user, title=f"{name.title()}'s first post")
        call_command("runserver", "127.0.0.1:8002")
