"""One exception per failure; every message says what was expected and where."""


class CfMetricsError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(CfMetricsError):
    """A parameter, option or setting has a value outside its expected form.

    `setting` names the setting neutrally (one of the Setting values, e.g. "namespace"); the entry points turn it
    into what their users type: the CLI's flag, the handler's environment variable.
    """

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


class SqlTemplateError(CfMetricsError):
    """A file in sql/ cannot be rendered: unknown or missing parameter, unparseable text."""


class UntranslatableSqlError(CfMetricsError):
    """A file in sql/ uses a function whose Athena-to-DuckDB translation no test proves."""


class LayoutError(CfMetricsError):
    """The log root does not exist or cannot be listed."""


class EngineError(CfMetricsError):
    """The query engine failed to run a query."""


class LimitError(CfMetricsError):
    """A metric datum or request would break a CloudWatch limit."""


class PublishError(CfMetricsError):
    """A sink refused or failed to take a request."""


class PublishAmbiguous(PublishError):
    """The destination may have taken a request whose answer was lost (5xx, read timeout, connection dropped)."""


class PublishNotSent(PublishError):
    """The destination certainly did not take the request: it refused it (4xx), or no connection was opened."""


class LedgerError(CfMetricsError):
    """The ledger is unreadable, locked or inconsistent."""


class SqlChangedError(CfMetricsError):
    """A query's text changed after it published: old and new definitions would mix under one metric name."""


class InFlightUnknown(CfMetricsError):
    """A request was in flight when a run stopped, and reading the destination back cannot tell if it arrived."""


class MetricOwnedError(CfMetricsError):
    """A query would publish a metric name that another query already publishes to the same destination."""


class UnreadableFileError(EngineError):
    """The engine could not read a log file's data (not gzip, truncated, binary junk): the file's fault, not the
    engine's; the run records the file as unreadable instead of failing on it forever."""


class QueryTimedOut(UnreadableFileError):
    """A query did not finish in time (a gzip bomb, a huge file): isolated and recorded like an unreadable file."""
