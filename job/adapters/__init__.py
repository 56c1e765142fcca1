"""All I/O: the engines, log stores, ledgers and sinks behind the ports, and the AWS clients."""
