"""Wire encodings of the v2 protocol: tensor data (raw and JSON) and HTTP bodies."""
