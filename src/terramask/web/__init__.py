"""The browser app for interactive segmentation (``terramask serve``).

:func:`terramask.web.app.create_app` builds the FastAPI app; importing this package
alone loads nothing heavy.
"""
