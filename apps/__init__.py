"""slidelite.apps: applications built on the public runtime API (imported as ``slidelite.apps``).

* :mod:`slidelite.apps.camera`: the Raspberry Pi camera app behind ``slidelite camera`` (see apps/README.md).
"""
