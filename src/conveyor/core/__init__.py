"""conveyor core: pure rules, no I/O."""
