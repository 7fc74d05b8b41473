"""Example conveyor apps (importable as ``examples.demo_app``)."""
