"""The asyncio runtime's pieces that need no server: the sync-context adapter and the
filter for grpc's "caller has gone" tracebacks (the server itself: tests/integration/serving/test_server.py)."""

import logging

import grpc
import pytest

from serving._aio import SyncContext, _Aborted, _GoneCallers


class ExecuteBatchError(Exception):
    """Named like grpc's cygrpc.ExecuteBatchError, which cannot be raised from Python."""


def _record(exc: BaseException | None) -> logging.LogRecord:
    info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("grpc._cython.cygrpc", logging.ERROR, __file__, 1, "raised in core", (), info)


def test_gone_callers_are_counted_not_logged_and_other_errors_pass():
    gone = _GoneCallers()
    assert gone.filter(_record(ExecuteBatchError("send failed"))) is False
    assert gone.filter(_record(ExecuteBatchError("send failed"))) is False
    assert gone.filter(_record(ValueError("a real bug"))) is True
    assert gone.filter(_record(None)) is True
    assert gone.count == 2


class _FakeAioContext:
    def __init__(self):
        self.code = self.details = None
        self.trailing = ()

    def set_code(self, code):
        self.code = code

    def set_details(self, details):
        self.details = details

    def set_trailing_metadata(self, md):
        self.trailing = md

    def time_remaining(self):
        return 1.5


def test_sync_context_abort_sets_the_status_and_unwinds():
    ctx = _FakeAioContext()
    sync = SyncContext(ctx)
    assert sync.time_remaining() == 1.5                 # everything else passes through
    with pytest.raises(_Aborted):
        sync.abort(grpc.StatusCode.NOT_FOUND, "no such ad", (("x-error-field", "ad_id"),))
    assert (ctx.code, ctx.details, ctx.trailing) == (grpc.StatusCode.NOT_FOUND, "no such ad", (("x-error-field", "ad_id"),))
