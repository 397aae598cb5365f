"""Example zsad plugin: a mean-colour backbone, two image heads and a recipe (see the package README).

Nothing here is imported by zsad until one of the entry-point names is used.
"""

__version__ = "0.1.0"
