"""Decoding images and turning them into model tensors."""

from edgeinfer.imaging.decode import DecodeOptions, ImageSource, decode_bytes, decode_image
from edgeinfer.imaging.preprocess import Preprocessor

__all__ = ["DecodeOptions", "ImageSource", "Preprocessor", "decode_bytes", "decode_image"]
