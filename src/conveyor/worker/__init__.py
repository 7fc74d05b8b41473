"""The worker: claim loop (dispatcher), running one handler (executor), leases (lease)."""
