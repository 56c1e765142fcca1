"""The pure core: values in, values out; no clock, environment, files or AWS; imports nothing outside core/."""
