"""The catalogue REST API (``/api/v1/``): items, users and feedback, one module each.

The views are re-exported here for ``catalog.api_urls``.
"""

from .common import MAX_PAGE_SIZE
from .feedback import (
    FeedbackBatchInputSerializer,
    FeedbackEventInputSerializer,
    FeedbackRecordApi,
    FeedbackRecordInputSerializer,
    FeedbackRecordSlashApi,
)
from .items import ItemDetailApi, ItemDetailSlashApi, ItemListApi, ItemListSlashApi
from .users import (
    UserDetailApi,
    UserDetailSlashApi,
    UserFeedbackListApi,
    UserFeedbackListSlashApi,
    UserListApi,
    UserListSlashApi,
)

__all__ = [
    "MAX_PAGE_SIZE",
    "FeedbackBatchInputSerializer",
    "FeedbackEventInputSerializer",
    "FeedbackRecordApi",
    "FeedbackRecordInputSerializer",
    "FeedbackRecordSlashApi",
    "ItemDetailApi",
    "ItemDetailSlashApi",
    "ItemListApi",
    "ItemListSlashApi",
    "UserDetailApi",
    "UserDetailSlashApi",
    "UserFeedbackListApi",
    "UserFeedbackListSlashApi",
    "UserListApi",
    "UserListSlashApi",
]
