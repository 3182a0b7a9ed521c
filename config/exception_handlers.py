"""One place that turns domain errors into JSON 4xx answers for the API."""

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from config.middleware import api_error, api_error_detail, is_api_request
from config.validation import CONFLICT, is_conflict


class ApplicationError(Exception):
    """A domain error with a message safe to show to API clients."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, message: str, *, extra: dict | None = None):
        super().__init__(message)
        self.message = message
        self.extra = extra or {}


class ConflictError(exceptions.ValidationError):
    """Field errors, like a 400, but the request clashes with stored data: 409."""

    status_code = status.HTTP_409_CONFLICT
    default_code = CONFLICT


def _django_validation_detail(error: DjangoValidationError) -> dict | list:
    if hasattr(error, "error_dict"):
        return {field: [str(m) for m in messages] for field, messages in error.message_dict.items()}
    return {"non_field_errors": list(error.messages)}


def api_exception_handler(exc, context):
    if isinstance(exc, DjangoValidationError):
        error_class = ConflictError if is_conflict(exc) else exceptions.ValidationError
        exc = error_class(detail=_django_validation_detail(exc))
    elif isinstance(exc, (Http404, ObjectDoesNotExist)):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ApplicationError):
        return Response({"detail": exc.message, **exc.extra}, status=exc.status_code)
    return exception_handler(exc, context)


# --------------------------------------------------------------------------------------------
# Django's error views (handler400/403/404/500 in config/urls.py, used when DEBUG is off): JSON
# under /api/, pages elsewhere. With DEBUG on Django shows its technical pages instead, and
# config.middleware.ApiErrorsAsJsonMiddleware answers the same JSON for the API.
# --------------------------------------------------------------------------------------------


def bad_request(request, exception):
    if is_api_request(request):
        return api_error(api_error_detail(400), status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if is_api_request(request):
        return api_error(api_error_detail(403), status=403)
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if is_api_request(request):
        return api_error(api_error_detail(404), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if is_api_request(request):
        return api_error(api_error_detail(500), status=500)
    return defaults.server_error(request)
