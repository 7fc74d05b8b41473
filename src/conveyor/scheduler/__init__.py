"""Recurring schedules: the scheduler task that fires due instants (see scheduler.py)."""
