"""The worker, in parts (docs/workers.md): claim and launch (dispatcher), one handler
run (executor), acknowledgements (acks), leases and heartbeats (lease), maintenance by
the elected leader (maintenance), and the client's worker methods (methods)."""
