"""Engine conformance on a real Trino (make test-trino): the tests start and stop the server themselves."""
