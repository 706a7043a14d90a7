"""The ``hvguestctl status`` report: built as data (document, collect, details, problems,
daemons), then rendered (render_text, render_json).
"""
