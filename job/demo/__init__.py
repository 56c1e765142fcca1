"""The demo and its fixtures (sample logs, chart, read-back, moto launcher): used by tests and bench, never shipped."""
