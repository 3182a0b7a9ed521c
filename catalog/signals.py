"""Signals the catalogue sends after a write has committed.

They are sent from ``transaction.on_commit`` callbacks, so a receiver never sees a row that
was rolled back, and it may safely enqueue a Celery task that reads the row again.

The recommender connects to these for fold-in, cold-start vectors and cache invalidation;
the catalogue itself connects nothing.
"""

from django.dispatch import Signal

# Sent once per stored feedback row with keyword arguments
# ``profile_id`` (UserProfile pk), ``item_id`` (Item pk), ``kind`` (FeedbackKind code)
# and ``feedback_id``. Not sent when an idempotency key repeats (nothing was written).
feedback_recorded = Signal()

# Sent when a feedback row is removed (the "my activity" page), with ``profile_id``,
# ``item_id``, ``kind`` and ``was_current`` (the row was the current state of a stateful kind).
feedback_deleted = Signal()

# Sent after an item is created or changed (fields, features or activity), with ``item_id``
# and ``created`` (True for a new item), so new items can get a cold-start vector.
item_changed = Signal()
