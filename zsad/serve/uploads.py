"""Uploaded bytes -> a decoded ``PIL.Image``, or an :class:`UploadRejected` error carrying the HTTP status.

Only raster formats zsad reads from disk are accepted (PNG, JPEG, BMP, TIFF, WebP; never formats that call
external programs, such as EPS). The pixel count is checked from the header *before* decoding (the
decompression-bomb limit), so a small file that expands to gigabytes is refused without being expanded. The
image is decoded here, in full: what the model then receives is exactly what ``Detector.predict`` reads from the
same file.

Example:
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGB", (30, 20)).save(buf, format="PNG")
    >>> decode_upload(buf.getvalue(), max_pixels=10_000).size
    (30, 20)
    >>> decode_upload(buf.getvalue(), max_pixels=100)
    Traceback (most recent call last):
    ...
    zsad.serve.uploads.UploadRejected: The image is 30 x 20 = 600 pixels, more than this server accepts (100); send a smaller image.
    >>> decode_upload(b"name,score\\n", max_pixels=100)
    Traceback (most recent call last):
    ...
    zsad.serve.uploads.UploadRejected: The upload is not an image this server reads (PNG, JPEG, BMP, TIFF or WebP).
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from zsad.errors import ImageError

__all__ = ["ACCEPTED_FORMATS", "UploadRejected", "decode_upload"]

ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
"""Pillow format names accepted in uploads (JPEG includes the MPO files many cameras write)."""


class UploadRejected(ImageError):
    """An upload the server refuses; ``status`` is the HTTP status of the answer (413, 415 or 422)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode uploaded bytes into a loaded ``PIL.Image`` (its mode as stored; the model converts it to RGB).

    Raises:
        UploadRejected: 415 not an image of an accepted format; 413 more than ``max_pixels`` pixels;
            422 empty, corrupt or truncated.
    """
    if not data:
        raise UploadRejected("The uploaded file is empty; send the image's bytes in the 'image' field.", 422)
    Image.init()  # register every format plugin, so that `formats` can name them
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as exc:
        raise UploadRejected(f"The image is too large to decode safely ({exc}); send a smaller image.", 413) from None
    except UnidentifiedImageError:
        raise UploadRejected(
            "The upload is not an image this server reads (PNG, JPEG, BMP, TIFF or WebP).", 415
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UploadRejected(f"Cannot read the image header: {type(exc).__name__}: {exc}.", 422) from None
    width, height = image.size
    if width * height > max_pixels:
        raise UploadRejected(
            f"The image is {width} x {height} = {width * height} pixels, more than this server accepts "
            f"({max_pixels}); send a smaller image.",
            413,
        )
    if width < 1 or height < 1:
        raise UploadRejected(f"The image has no pixels ({width} x {height}).", 422)
    try:
        image.load()
    except Image.DecompressionBombError as exc:
        raise UploadRejected(f"The image is too large to decode safely ({exc}); send a smaller image.", 413) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UploadRejected(
            f"The {image.format} image is corrupt or truncated ({type(exc).__name__}: {exc}); re-export it.", 422
        ) from None
    return image
