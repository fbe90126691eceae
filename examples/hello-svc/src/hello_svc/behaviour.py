"""How this build of the service behaves; `examples/publish.py --behaviour` rewrites it.

Tests publish deliberately broken versions (crash at start, 503 on /health,
healthy only after a delay) of the same package, as real packages on the
index, to prove that a roll stops at the first sick node.
"""

BEHAVIOUR = "ok"
