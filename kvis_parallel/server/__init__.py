"""HTTP service: upload a foamToVTK archive, get an H.264 movie back.

See ``docs/server.md`` for the endpoints and options; :func:`app.make_app`
builds the Tornado application and :func:`app.main` runs ``kvis-server``.
"""
