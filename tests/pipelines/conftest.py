"""Fixtures that several test modules of this folder share.

``outputs`` (the four fixture outputs) and ``catalog`` (a catalog built from them) are module
scoped, so each test module still writes and builds its own; they are offered here rather than
imported into each test module, where the test's parameter of the same name would shadow them.
"""

from catalog_fixtures import catalog as catalog
from catalog_fixtures import outputs as outputs
