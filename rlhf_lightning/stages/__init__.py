"""One runner per stage: config in, fitted trainer out (the run directory filled in)."""
