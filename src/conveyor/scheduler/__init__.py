"""Recurring schedules (docs/schedules.md): the client's schedule methods (methods.py)
and the scheduler that fires due instants (scheduler.py), run by the store's
maintenance leader."""
