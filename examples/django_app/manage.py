#!/usr/bin/env python
"""A Django app that notifies a post's author of each new comment, through Clarion.

    CLARION_API_KEY=<clarion keys create> CLARION_JWT_SECRET=<the server's secret> \
        python examples/django_app/manage.py demo

`demo` migrates a SQLite database beside this file, creates the users alice and bob (password
`demo`) and serves http://127.0.0.1:8002: sign in as alice, comment on bob's post, and bob's
inbox (his `<clarion-inbox>` on the same page) gets it live. The code that matters is
blog/signals.py (a `post_save` receiver calling `notify_on_commit`) and the `clarion-token` URL.
"""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_config.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
