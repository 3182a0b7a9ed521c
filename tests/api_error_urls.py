"""A URLconf for tests/test_api_errors.py: the project's URLs plus plain (not DRF) API views that fail.

DRF views turn their own errors into JSON; these show what reaches Django's error handling.
"""

from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404
from django.urls import path

from config import urls as project_urls


def crash(request):
    raise RuntimeError("a bug in a view")


def refuse(request):
    raise PermissionDenied


def suspicious(request):
    raise SuspiciousOperation("a malformed request")


def missing(request):
    raise Http404("no such thing")


urlpatterns = [
    path("api/test/crash", crash),
    path("api/test/refuse", refuse),
    path("api/test/suspicious", suspicious),
    path("api/test/missing", missing),
    path("test/crash", crash),
    *project_urls.urlpatterns,
]

handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500
