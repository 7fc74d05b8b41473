"""The ``conveyor`` command line (SPEC §5). Nothing imports this package; it imports
the client, settings and logging set-up, and reads the environment."""
