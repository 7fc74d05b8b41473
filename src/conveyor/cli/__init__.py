"""The ``conveyor`` command line (README.md). Nothing imports this package; it imports
the client, settings and logging set-up, and reads the environment."""
