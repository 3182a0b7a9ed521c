"""Settings, one module per topic, composed by `development` (the default) and `production`.

Empty on purpose: importing ``config.settings.production`` runs this package first, and the
development settings here would start the embedded PostgreSQL before production could refuse to
start without DATABASE_URL.
"""
