"""Named recipes: :class:`~zsad.config.DetectorConfig` documents shipped as JSON files in this folder.

``tipsomaly`` is the default. Use ``zsad.get_recipe(name)`` to read one and ``zsad.list_recipes()`` to list all.
"""
