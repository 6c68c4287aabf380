"""Handler modules run by `worker run handlers.NAME`."""
