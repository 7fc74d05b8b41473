"""Passwords never reach logs or error messages: every form is hidden."""

from __future__ import annotations

import pytest

from conveyor.core.errors import ConfigurationError
from conveyor.core.redact import redact
from conveyor.settings import Settings


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:***@db:5432/app"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        (
            "postgresql://db/app?user=app&password=s3cret&sslmode=require",
            "postgresql://db/app?user=app&password=***&sslmode=require",
        ),
        ("host=db password=s3cret user=app", "host=db password=*** user=app"),
        ("host=db password='s3 cret' user=app", "host=db password=*** user=app"),
        (
            "connection to postgresql://u:s3cret@h/db failed: timeout",
            "connection to postgresql://u:***@h/db failed: timeout",
        ),
        ("sqlite:///var/lib/app.db", "sqlite:///var/lib/app.db"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
    ],
)
def test_redact_hides_every_password_form(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert "s3cret" not in redact(text) and "s3 cret" not in redact(text)


@pytest.mark.parametrize("url", ["mysql://u:s3cret@h/db", "mongodb://h/db?password=s3cret"])
def test_a_bad_url_setting_is_not_echoed_with_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError, match="CONVEYOR_URL") as err:
        Settings.from_env({"CONVEYOR_URL": url})
    assert "s3cret" not in str(err.value)


def test_log_lines_of_conveyor_commands_hide_passwords() -> None:
    import io
    import logging
    import sys
    import threading
    import warnings

    from conveyor.logs import configure_logging

    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    hooks = (sys.excepthook, threading.excepthook, warnings.formatwarning)
    try:
        for fmt in ("text", "json"):
            configure_logging(fmt=fmt, stream=stream)
            logging.getLogger("psycopg.pool").warning("connection to %s failed", "postgresql://u:s3cret@db/app")
            logging.getLogger("conveyor").error("dsn host=db password=s3cret")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        sys.excepthook, threading.excepthook, warnings.formatwarning = hooks
        logging.captureWarnings(False)
    assert "s3cret" not in stream.getvalue()
    assert stream.getvalue().count("***") == 4
