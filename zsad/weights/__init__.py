"""Known model checkpoints, the local weights cache, and safe downloads.

This module is part of zsad's light core: it needs only the standard library, plus ``tqdm`` for progress bars and
``huggingface_hub`` for hub checkpoints, both imported lazily. It never imports torch.

**The table.** :data:`CHECKPOINTS` lists every checkpoint zsad knows, as data: each :class:`Checkpoint` has a
``kind`` and, for plain files, a tuple of :class:`WeightFile` (URL, standard local name, size and sha256 where
known, licence, attribution):

- ``"tips"``: TIPS v1 / TIPSv2 PyTorch ``.npz`` files from Google's bucket, stored by zsad in its own cache;
- ``"huggingface"``: a hub repository (TIPSv2, SigLIP2) fetched with ``huggingface_hub.snapshot_download`` into
  the Hugging Face cache;
- ``"open_clip"``: an open_clip ``arch`` + pretrained ``tag`` (named ``arch.tag``), whose weight file is fetched
  from the hub repository open_clip itself uses, so ``open_clip.create_model(arch, pretrained=tag)`` finds it;
- ``"prompts"``: a method's released learned prompts (``anomalyclip-visa``, ``anomalyclip-mvtec``: the official
  AnomalyCLIP ``epoch_15.pth`` files, MIT), one file stored by zsad like a TIPS file and named as a
  ``prompt_checkpoint``.

**The cache.** :func:`cache_dir` is ``$ZSAD_CACHE``, else ``$XDG_CACHE_HOME/zsad``, else ``~/.cache/zsad``. A
``"tips"`` checkpoint lives in ``cache_dir()/<name>/`` in the standard layout a TIPS loader expects::

    vision.npz  text.npz  tokenizer.model  [model.json]  .zsad-manifest.json (sha256 of what was stored)

**Mirrors.** ``ZSAD_WEIGHTS_URL`` replaces the ``https://storage.googleapis.com/tips_data/`` prefix, so a mirror
(``https://…``, ``file://…`` or a plain local folder) must reproduce the same relative paths, e.g.
``v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled_vision.npz``. A mirror may serve at its root an index
``zsad-weights.json`` of the form ``{"<relative path>": {"sha256": "<hex>", "size": <bytes>}}``; its entries
override the table's checksums for that mirror (so private mirrors, and test servers with tiny models, verify
too); without an index the table's known sha256 are used. When zsad downloads a checkpoint from a mirror it also
tries ``<same folder>/<stem>_model.json`` (e.g. ``…/pytorch/tips_oss_l14_highres_distilled_model.json``) and stores
it as ``model.json``; a 404 there is normal and silent. This lets a mirror host a non-standard (e.g. tiny)
architecture.

**Offline.** ``ZSAD_OFFLINE=1`` (or ``offline=True``) never touches the network; a missing file raises
:class:`~zsad.errors.WeightsError` saying which files are missing, the exact folder and names to put them under,
the URLs to fetch them from, and the ``zsad weights download NAME`` / ``zsad weights import NAME PATH…`` commands.
An unreachable server gives the same list. ``ZSAD_DOWNLOAD_TIMEOUT`` (seconds, default 60) is a stall limit and a
deadline: a request fails when the server sends nothing for that long, or less than 1 MiB in that long (see
:mod:`zsad.weights.transport`). Hugging Face downloads fail fast, in one line, when the hub is unreachable
(:func:`check_hub_reachable`).

**Safety.** Downloads stream into ``<file>.part`` and are fsync-ed and atomically renamed, so a file at its final
path is always complete. They are checked against the expected size and the sha256 where one is known (the
table's, or a mirror index's); a file without a known checksum is checked against the length the server
announced. An interrupted download is resumed with an HTTP Range request only when the result can be verified:
with a known sha256, or with the server's ``ETag`` (sent as ``If-Range``) and length recorded when it started;
otherwise it starts over. The size, modification time and sha256 of every stored file are recorded in
``.zsad-manifest.json``; every use of the checkpoint compares the files with that record, so a cached file that
was truncated or edited is reported (``zsad weights download NAME`` replaces it) instead of failing later.
Imported files are copied, never linked. Concurrent processes downloading the same file wait on a lock instead
of colliding.

Example:
    >>> ckpt = get_checkpoint("tips-v1-l14-hr")
    >>> [f.filename for f in ckpt.files]
    ['vision.npz', 'text.npz', 'tokenizer.model']
    >>> ckpt.files[0].url
    'https://storage.googleapis.com/tips_data/v1_0/checkpoints/pytorch/tips_oss_l14_highres_distilled_vision.npz'
"""

from __future__ import annotations

from zsad.weights.download import cache_dir, checkpoint_dir, download_file, is_offline, weights_base_url
from zsad.weights.store import (
    check_hub_reachable,
    ensure_checkpoint,
    import_files,
    list_checkpoints,
    replace_hint,
    resolve_backbone_checkpoint,
    verify_checkpoint,
)
from zsad.weights.table import (
    CHECKPOINTS,
    GCS_PREFIX,
    INDEX_NAME,
    TRY_WITHOUT_WEIGHTS,
    Checkpoint,
    WeightFile,
    get_checkpoint,
    known_checkpoint_names,
)

__all__ = [
    "WeightFile",
    "Checkpoint",
    "CHECKPOINTS",
    "GCS_PREFIX",
    "INDEX_NAME",
    "TRY_WITHOUT_WEIGHTS",
    "cache_dir",
    "checkpoint_dir",
    "weights_base_url",
    "is_offline",
    "get_checkpoint",
    "known_checkpoint_names",
    "download_file",
    "ensure_checkpoint",
    "verify_checkpoint",
    "import_files",
    "list_checkpoints",
    "resolve_backbone_checkpoint",
    "check_hub_reachable",
    "replace_hint",
]
