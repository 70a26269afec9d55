"""Helper code shared by tests (imported as ``helpers.<name>``; tests/ is on sys.path)."""
