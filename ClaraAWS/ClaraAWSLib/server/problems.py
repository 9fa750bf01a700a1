"""Failures the reference server reports to its clients as AIAA error JSON.

Raising one of these anywhere while a request is handled ends the request with its status code and
``{"error": {"message": [message], "type": error_type}, "success": false}``.
"""

from __future__ import annotations


class ServerProblem(Exception):
    status = 500
    error_type = "InternalServerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict:
        return {"error": {"message": [self.message], "type": self.error_type}, "success": False}


class BadRequest(ServerProblem):
    status = 400
    error_type = "BadRequest"


class InvalidParams(BadRequest):
    error_type = "InvalidParams"


class InvalidImage(BadRequest):
    error_type = "InvalidImage"


class WrongModelType(BadRequest):
    error_type = "WrongModelType"


class NotFound(ServerProblem):
    status = 404
    error_type = "NotFound"


class ModelNotFound(NotFound):
    error_type = "ModelNotFound"


class MethodNotAllowed(ServerProblem):
    status = 405
    error_type = "MethodNotAllowed"


class PayloadTooLarge(ServerProblem):
    status = 413
    error_type = "PayloadTooLarge"


class SessionExpired(ServerProblem):
    # 440 is not a standard status; AIAA uses it for "unknown or expired session".
    status = 440
    error_type = "SessionExpired"
