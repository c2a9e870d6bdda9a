"""The root of shadoweval's own exceptions. Imports nothing, so every module may use it.

Each exception is defined beside the code that raises it and subclasses `ShadowevalError`, so
`except ShadowevalError` catches any of them; those that were a `ValueError` or `RuntimeError`
still are, so existing handlers keep working:

    ShadowevalError
        SettingsError (ValueError)        core/settings.py   the configuration cannot be used
        InvalidPath (ValueError)          proxy/paths.py      a request path that is not forwarded
        CandidateError                    proxy/candidates.py a candidate answered with an error
        ProductionStreamBroken            proxy/app.py        abort the client's connection
        ClientGone                        proxy/app.py        the client left mid-request
        StoreUnavailable (RuntimeError)   core/store_grading.py  the store's writer is down or full
        CalibrationError (ValueError)     judges/calibrate.py the labels cannot be calibrated on
        _Reject                           proxy/server.py     a request refused before it reaches the app

Not under it: proxy/http1.py's UpstreamError family (ConnectError, UpstreamTimeout,
ProtocolError), since that client imports nothing from the project so that any module may use it,
and the command line's click exceptions, which click itself prints and turns into exit codes.
"""

from __future__ import annotations


class ShadowevalError(Exception):
    """Any error shadoweval raises on purpose; the message is written for the person who reads it."""
