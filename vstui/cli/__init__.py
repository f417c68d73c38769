"""Command-line tools; each is a thin front end over the engine."""
