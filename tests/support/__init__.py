"""What the tests share: waiting with deadlines, the test credentials, the platform's
configuration, real brokers and servers, worker processes and the in-memory pipeline kit."""
