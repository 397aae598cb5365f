"""Vision-language backbones: the contract (:mod:`zsad.backbones.base`) and the built-in families.

Built-ins are registered lazily in :mod:`zsad.components`; importing this package imports nothing heavy.
"""
