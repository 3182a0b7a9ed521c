"""Dashboard views, one module per page; thin: selectors read, services write."""
