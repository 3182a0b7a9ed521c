"""Staff-facing dashboard pages: models, rules, embedding map, data import, health, "view as user".

Views are thin (one module per page under ``views/``); reads live in ``selectors.py`` and
``health.py``, writes in ``services.py``, numeric helpers (PCA, chart geometry) in
``projection.py`` and ``charts.py``. See docs/dashboard.md.
"""
