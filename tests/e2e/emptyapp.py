"""An App without a handler: ``worker run`` must say so and exit 3, not wait to be ready."""

from worker import App

app = App()
