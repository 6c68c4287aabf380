"""A module without an App: ``worker run`` must say so and exit 3."""

VALUE = 1
