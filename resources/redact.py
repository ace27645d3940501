"""Secrets out of every text glan stores or logs: each is replaced with `***`.

The settings (`glan_assets.settings`, the one reader of the environment) `register` the
secret values they are given: the API key, PostgreSQL passwords, the passwords inside broker
URLs. The LLM transport registers the key it sends as well. Redaction then happens where text
crosses into storage or logs, so that no call site has to remember it:

- `resources.llm`: every text that comes from the endpoint (a completion, an error body, a
  connection error) before it is cached, raised or returned;
- `resources.storage`: every string, and every list of strings, of every row it writes (the
  tables, the rejects, a release's files);
- logging: once a secret is registered, every log record the process makes (glan's loggers,
  a step's `context.log`, Dagster's own) has its message and traceback redacted when it is
  made. The record factory is the one point that all of them pass, so Dagster's event log
  and the build's log file, written from it, never see the value.

A value shorter than `MIN_CHARS` is not registered: it cannot be told from ordinary text, and
redacting a password like "test" would rewrite every training pair whose split is "test".
"""

import logging
import threading

import pyarrow as pa
import pyarrow.compute as pc

MASK = "***"
MIN_CHARS = 8

_secrets: tuple[str, ...] = ()  # longest first, so a secret inside another is not half-masked
_lock = threading.Lock()
_base_factory = None  # the log record factory the redacting one wraps, once installed


def register(*values: str | None) -> None:
    """Redact these values from now on in this process (empty and short ones are skipped)."""
    global _secrets
    new = {v for v in values if v and len(v) >= MIN_CHARS}
    with _lock:
        if new - set(_secrets):
            _secrets = tuple(sorted(set(_secrets) | new, key=len, reverse=True))
            _install_log_redaction()


def redact(text: str) -> str:
    """`text` with every registered secret replaced by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_table(table: pa.Table) -> pa.Table:
    """`table` with every registered secret replaced in its string and list-of-string columns
    (a vectorised search first: most writes hold no secret and are returned as they are)."""
    if not _secrets:
        return table
    for i, f in enumerate(table.schema):
        column = table.column(i)
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            values = column
        elif pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type):
            values = pc.list_flatten(column)
        else:
            continue
        if not any(len(values) and pc.any(pc.match_substring(values, s)).as_py() for s in _secrets):
            continue
        if values is column:
            for secret in _secrets:
                column = pc.replace_substring(column, secret, MASK)
        else:
            column = pa.array(
                [None if v is None else [None if x is None else redact(x) for x in v] for v in column.to_pylist()],
                f.type,
            )
        table = table.set_column(i, f, column)
    return table


def _install_log_redaction() -> None:
    """Wrap the log record factory (once) so that each record's text is redacted when made."""
    global _base_factory
    if _base_factory is not None:
        return
    _base_factory = logging.getLogRecordFactory()
    base = _base_factory

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: logging reports it when the record is handled
            return record
        if (clean := redact(message)) != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if (clean := redact(text)) != text:
                record.exc_text = clean  # formatters print exc_text when it is set
        return record

    logging.setLogRecordFactory(factory)
