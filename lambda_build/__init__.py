"""Building the Lambda functions' artifacts (what `sam build` ships); never shipped itself."""
