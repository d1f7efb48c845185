"""asv benchmark suites (one file per subsystem)."""
